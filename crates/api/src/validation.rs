//! Validation of custom resources: every problem, each with its field path.
//!
//! The validators never stop at the first problem: they return one
//! [`FieldError`] per bad field, so a user fixes a manifest in one round.
//! They check what the upstream CRD schema and operator enforce (exactly one
//! of `port` / `portName`, port range, `concurrency` xor `requestRate` on an
//! `HTTPScaledObject`, ...) plus the syntax of what the interceptor matches
//! on (hosts, paths, headers) and the Go durations.
//!
//! Decisions beyond upstream, and why:
//! - A host with one trailing dot (`example.com.`, an absolute DNS name) is
//!   the same as without it; routing strips it from `Host` headers too.
//! - A `requestRate` window that is not a whole number of granularity buckets
//!   is accepted (upstream accepts it); only `granularity <= window` and both
//!   non-zero are required.
//! - A static response without `statusCode` is valid: 200 for a static route,
//!   503 for a placeholder.
//! - An empty `scaleTargetRef.name` is accepted here (routing does not need
//!   it, and the skip-ScaledObject annotation makes it optional); the operator
//!   reports it when it needs the workload.

mod duration;
mod host;
pub mod syntax;

use std::collections::HashMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};

pub use duration::parse_go_duration;
pub use host::HostPattern;

use crate::schema::{CONDITION_MESSAGE_MAX, CONDITION_STATUSES, STATIC_BODY_MAX};
use crate::{
    ColdStart, HTTPScaledObject, HeaderMatch, InterceptorRoute, RoutingRule, ScalingMetric,
    StaticResponse,
};

/// One problem with one field of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// `namespace/name` of the object (`<no-namespace>/name` without a
    /// namespace, `<unnamed>` for a missing name, `<unknown>` when the input
    /// is not an object at all).
    pub object: String,
    /// Field path, e.g. `spec.scaleTargetRef` or `spec.rules[0].hosts[1]`;
    /// `.` for the object as a whole.
    pub field: String,
    /// What is wrong, in one line.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.object, self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// `namespace/name` of an object, as used in [`FieldError::object`].
pub fn object_ref(meta: &ObjectMeta) -> String {
    object_ref_parts(meta.namespace.as_deref(), meta.name.as_deref())
}

pub(crate) fn object_ref_parts(namespace: Option<&str>, name: Option<&str>) -> String {
    let namespace = namespace
        .filter(|s| !s.is_empty())
        .unwrap_or("<no-namespace>");
    let name = name.filter(|s| !s.is_empty()).unwrap_or("<unnamed>");
    format!("{namespace}/{name}")
}

/// Collects the problems of one object.
struct Problems {
    object: String,
    errors: Vec<FieldError>,
}

impl Problems {
    fn new(meta: &ObjectMeta) -> Self {
        Problems {
            object: object_ref(meta),
            errors: Vec::new(),
        }
    }

    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            object: self.object.clone(),
            field: field.into(),
            message: message.into(),
        });
    }

    fn check(&mut self, field: impl Into<String>, result: Result<(), String>) {
        if let Err(message) = result {
            self.add(field, message);
        }
    }

    fn hosts<'a>(&mut self, path: &str, hosts: impl IntoIterator<Item = &'a String>) {
        for (i, host) in hosts.into_iter().enumerate() {
            if let Err(message) = HostPattern::parse(host) {
                self.add(format!("{path}[{i}]"), message);
            }
        }
    }

    fn headers(&mut self, path: &str, headers: &[HeaderMatch]) {
        let mut first_index: HashMap<&str, usize> = HashMap::new();
        for (i, header) in headers.iter().enumerate() {
            self.check(
                format!("{path}[{i}].name"),
                syntax::header_name(&header.name),
            );
            if let Some(value) = &header.value {
                self.check(format!("{path}[{i}].value"), syntax::header_value(value));
            }
            // The upstream CRD keys this list by name (`listType: map`).
            if let Some(first) = first_index.insert(&header.name, i) {
                self.add(
                    format!("{path}[{i}].name"),
                    format!(
                        "duplicate header name {:?} (also {path}[{first}])",
                        header.name
                    ),
                );
            }
        }
    }

    /// `service`-style name plus exactly one of `port` / `portName`.
    fn service_port(
        &mut self,
        path: &str,
        name_field: &str,
        name: &str,
        port: Option<i32>,
        port_name: Option<&str>,
    ) {
        self.check(
            format!("{path}.{name_field}"),
            syntax::dns1035_label(name).map_err(|e| format!("Service name {e}")),
        );
        match (port, port_name) {
            (Some(_), Some(_)) => self.add(
                path,
                "exactly one of port or portName must be set, not both",
            ),
            (None, None) => self.add(path, "exactly one of port or portName must be set"),
            _ => {}
        }
        if let Some(port) = port
            && !(1..=65535).contains(&port)
        {
            self.add(
                format!("{path}.port"),
                format!("{port} is out of range 1-65535"),
            );
        }
        if let Some(port_name) = port_name {
            self.check(
                format!("{path}.portName"),
                syntax::dns1123_label(port_name).map_err(|e| format!("port name {e}")),
            );
        }
    }

    /// Checks each `spec.timeouts.<name>` that is set as a Go duration.
    fn timeouts(&mut self, fields: &[(&str, &Option<String>)]) {
        for (name, value) in fields {
            self.duration(format!("spec.timeouts.{name}"), value.as_ref());
        }
    }

    fn duration(&mut self, field: String, value: Option<&String>) {
        if let Some(value) = value {
            self.check(field, parse_go_duration(value).map(drop));
        }
    }

    fn at_least(&mut self, field: String, value: Option<i64>, min: i64) {
        if let Some(value) = value
            && value < min
        {
            self.add(field, format!("{value} must be at least {min}"));
        }
    }

    fn scaling_metric(&mut self, path: &str, metric: &ScalingMetric) {
        if let Some(concurrency) = &metric.concurrency {
            self.at_least(
                format!("{path}.concurrency.targetValue"),
                concurrency.target_value,
                1,
            );
        }
        if let Some(rate) = &metric.request_rate {
            let rate_path = format!("{path}.requestRate");
            self.at_least(format!("{rate_path}.targetValue"), rate.target_value, 1);
            let window = self.positive_duration(format!("{rate_path}.window"), &rate.window);
            let granularity =
                self.positive_duration(format!("{rate_path}.granularity"), &rate.granularity);
            // Defaults are 1m and 1s, so only two explicit values can conflict,
            // but a 30s granularity with the default window still can.
            let window = window.unwrap_or(std::time::Duration::from_secs(60));
            let granularity = granularity.unwrap_or(std::time::Duration::from_secs(1));
            if granularity > window {
                self.add(
                    format!("{rate_path}.granularity"),
                    format!("granularity {granularity:?} is longer than the window {window:?}"),
                );
            }
        }
    }

    /// Parses an optional duration that must be non-zero; `None` when absent or bad.
    fn positive_duration(
        &mut self,
        field: String,
        value: &Option<String>,
    ) -> Option<std::time::Duration> {
        let value = value.as_ref()?;
        match parse_go_duration(value) {
            Ok(d) if d.is_zero() => {
                self.add(field, format!("{value:?} must be longer than zero"));
                None
            }
            Ok(d) => Some(d),
            Err(message) => {
                self.add(field, message);
                None
            }
        }
    }

    fn rules(&mut self, path: &str, rules: &[RoutingRule]) {
        for (i, rule) in rules.iter().enumerate() {
            let rule_path = format!("{path}[{i}]");
            self.hosts(&format!("{rule_path}.hosts"), &rule.hosts);
            let mut seen = HashMap::new();
            for (j, host) in rule.hosts.iter().enumerate() {
                // The upstream CRD makes this list a set.
                if let Some(first) = seen.insert(host.as_str(), j) {
                    self.add(
                        format!("{rule_path}.hosts[{j}]"),
                        format!("duplicate host {host:?} (also {rule_path}.hosts[{first}])"),
                    );
                }
            }
            for (j, path_match) in rule.paths.iter().enumerate() {
                self.check(
                    format!("{rule_path}.paths[{j}].value"),
                    syntax::path_prefix(&path_match.value),
                );
            }
            self.headers(&format!("{rule_path}.headers"), &rule.headers);
        }
    }

    fn static_response(&mut self, path: &str, response: &StaticResponse) {
        if let Some(code) = response.status_code
            && !(100..=599).contains(&code)
        {
            self.add(
                format!("{path}.statusCode"),
                format!("{code} is out of range 100-599"),
            );
        }
        if let Some(body) = &response.body {
            let chars = body.chars().count();
            if chars > STATIC_BODY_MAX {
                self.add(
                    format!("{path}.body"),
                    format!(
                        "body is {chars} characters, more than {STATIC_BODY_MAX}; use bodyFromConfigMap"
                    ),
                );
            }
        }
        if let Some(config_map) = &response.body_from_config_map {
            if response.body.is_some() {
                self.add(path, "set either body or bodyFromConfigMap, not both");
            }
            self.check(
                format!("{path}.bodyFromConfigMap.name"),
                syntax::dns1123_subdomain(&config_map.name)
                    .map_err(|e| format!("ConfigMap name {e}")),
            );
            // Absent or empty: the key comes from the request path (upstream).
            if let Some(key) = config_map.key.as_deref().filter(|k| !k.is_empty()) {
                self.check(
                    format!("{path}.bodyFromConfigMap.key"),
                    syntax::config_map_key(key).map_err(|e| format!("key {e}")),
                );
            }
        }
        for (name, value) in &response.headers {
            self.check(format!("{path}.headers[{name}]"), syntax::header_name(name));
            self.check(
                format!("{path}.headers[{name}]"),
                syntax::header_value(value),
            );
        }
    }

    fn cold_start(&mut self, path: &str, cold_start: &ColdStart) {
        if cold_start.fallback.is_none() && cold_start.placeholder.is_none() {
            self.add(path, "set at least one of fallback or placeholder");
        }
        if let Some(fallback) = &cold_start.fallback {
            let service = &fallback.service;
            self.service_port(
                &format!("{path}.fallback.service"),
                "name",
                &service.name,
                service.port,
                service.port_name.as_deref(),
            );
        }
        if let Some(placeholder) = &cold_start.placeholder {
            self.static_response(
                &format!("{path}.placeholder.response"),
                &placeholder.response,
            );
        }
    }
}

/// Every problem with an `HTTPScaledObject`; empty when it is valid.
///
/// ```
/// use api::{HTTPScaledObject, HTTPScaledObjectSpec, ScaleTargetRef, validate_http_scaled_object};
///
/// let mut obj = HTTPScaledObject::new("web", HTTPScaledObjectSpec {
///     hosts: Some(vec!["example.com:http".into()]),
///     scale_target_ref: ScaleTargetRef { service: "web".into(), port: Some(70000), ..Default::default() },
///     ..Default::default()
/// });
/// obj.metadata.namespace = Some("shop".into());
/// let errors: Vec<String> = validate_http_scaled_object(&obj).iter().map(|e| e.to_string()).collect();
/// assert_eq!(errors.len(), 2);
/// assert!(errors[0].starts_with("shop/web: spec.hosts[0]: "));
/// assert_eq!(errors[1], "shop/web: spec.scaleTargetRef.port: 70000 is out of range 1-65535");
/// ```
pub fn validate_http_scaled_object(obj: &HTTPScaledObject) -> Vec<FieldError> {
    let mut p = Problems::new(&obj.metadata);
    let spec = &obj.spec;

    if let Some(hosts) = &spec.hosts {
        p.hosts("spec.hosts", hosts);
    }
    for (i, prefix) in spec.path_prefixes.iter().flatten().enumerate() {
        p.check(
            format!("spec.pathPrefixes[{i}]"),
            syntax::path_prefix(prefix),
        );
    }
    if let Some(headers) = &spec.headers {
        p.headers("spec.headers", headers);
    }

    let target = &spec.scale_target_ref;
    p.service_port(
        "spec.scaleTargetRef",
        "service",
        &target.service,
        target.port,
        target.port_name.as_deref(),
    );
    if !target.name.is_empty() {
        p.check(
            "spec.scaleTargetRef.name",
            syntax::dns1123_subdomain(&target.name).map_err(|e| format!("workload name {e}")),
        );
    }

    if let Some(failover) = &spec.cold_start_timeout_failover_ref {
        p.service_port(
            "spec.coldStartTimeoutFailoverRef",
            "service",
            &failover.service,
            failover.port,
            failover.port_name.as_deref(),
        );
        p.at_least(
            "spec.coldStartTimeoutFailoverRef.timeoutSeconds".into(),
            failover.timeout_seconds.map(i64::from),
            0,
        );
    }

    if let Some(replicas) = &spec.replicas {
        p.at_least("spec.replicas.min".into(), replicas.min.map(i64::from), 0);
        p.at_least("spec.replicas.max".into(), replicas.max.map(i64::from), 1);
        let min = replicas.min.unwrap_or(0);
        let max = replicas.max.unwrap_or(100);
        if min > max && max >= 1 {
            let max_source = if replicas.max.is_some() {
                ""
            } else {
                " (the default)"
            };
            p.add(
                "spec.replicas",
                format!("min {min} is greater than max {max}{max_source}"),
            );
        }
    }
    p.at_least(
        "spec.targetPendingRequests".into(),
        spec.target_pending_requests.map(i64::from),
        1,
    );
    p.at_least(
        "spec.scaledownPeriod".into(),
        spec.scaledown_period.map(i64::from),
        0,
    );
    p.at_least(
        "spec.initialCooldownPeriod".into(),
        spec.initial_cooldown_period.map(i64::from),
        0,
    );

    if let Some(metric) = &spec.scaling_metric {
        if metric.concurrency.is_some() && metric.request_rate.is_some() {
            p.add(
                "spec.scalingMetric",
                "concurrency and requestRate are mutually exclusive; set only one",
            );
        }
        p.scaling_metric("spec.scalingMetric", metric);
    }

    if let Some(timeouts) = &spec.timeouts {
        p.timeouts(&[
            ("conditionWait", &timeouts.condition_wait),
            ("responseHeader", &timeouts.response_header),
        ]);
    }
    p.errors
}

/// Every problem with an `InterceptorRoute`; empty when it is valid.
///
/// ```
/// use api::{InterceptorRoute, InterceptorRouteSpec, TargetRef, validate_interceptor_route};
///
/// let mut obj = InterceptorRoute::new("web", InterceptorRouteSpec {
///     target: TargetRef { service: "web".into(), port: Some(8080), port_name: Some("http".into()) },
///     ..Default::default()
/// });
/// obj.metadata.namespace = Some("shop".into());
/// let errors: Vec<String> = validate_interceptor_route(&obj).iter().map(|e| e.to_string()).collect();
/// assert_eq!(errors, [
///     "shop/web: spec.target: exactly one of port or portName must be set, not both",
///     "shop/web: spec.scalingMetric: at least one of concurrency or requestRate must be set",
/// ]);
/// ```
pub fn validate_interceptor_route(obj: &InterceptorRoute) -> Vec<FieldError> {
    let mut p = Problems::new(&obj.metadata);
    let spec = &obj.spec;

    let target = &spec.target;
    p.service_port(
        "spec.target",
        "service",
        &target.service,
        target.port,
        target.port_name.as_deref(),
    );
    p.rules("spec.rules", &spec.rules);

    let metric = &spec.scaling_metric;
    if metric.concurrency.is_none() && metric.request_rate.is_none() {
        p.add(
            "spec.scalingMetric",
            "at least one of concurrency or requestRate must be set",
        );
    }
    // Unlike on an HTTPScaledObject, upstream has no default target here.
    let targets = [
        (
            "concurrency",
            metric.concurrency.as_ref().map(|m| m.target_value),
        ),
        (
            "requestRate",
            metric.request_rate.as_ref().map(|m| m.target_value),
        ),
    ];
    for (name, target) in targets {
        if let Some(None) = target {
            p.add(
                format!("spec.scalingMetric.{name}.targetValue"),
                "required on an InterceptorRoute (there is no default)",
            );
        }
    }
    p.scaling_metric("spec.scalingMetric", metric);

    if let Some(timeouts) = &spec.timeouts {
        p.timeouts(&[
            ("readiness", &timeouts.readiness),
            ("request", &timeouts.request),
            ("responseHeader", &timeouts.response_header),
        ]);
    }

    if let Some(cold_start) = &spec.cold_start {
        p.cold_start("spec.coldStart", cold_start);
    }

    for (i, route) in spec.static_routes.iter().enumerate() {
        let path = format!("spec.staticRoutes[{i}]");
        if route.rules.is_empty() {
            p.add(format!("{path}.rules"), "at least one rule is required");
        }
        p.rules(&format!("{path}.rules"), &route.rules);
        p.static_response(&format!("{path}.response"), &route.response);
    }
    p.errors
}

/// Every problem with the `status.conditions` of an object (either kind);
/// empty when they are valid.
///
/// Kept apart from [`validate_http_scaled_object`] and
/// [`validate_interceptor_route`] on purpose: the API server ignores the
/// `status` of a manifest on create and update (it has its own
/// subresource), so a bad status must not make a manifest invalid. This is
/// for what the operator writes to that subresource, which the API server
/// checks against the same rules (those of `metav1.Condition`).
///
/// ```
/// use api::validate_conditions;
/// use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
///
/// let meta = ObjectMeta { name: Some("web".into()), namespace: Some("shop".into()), ..Default::default() };
/// let ready = Condition {
///     type_: "Ready".into(),
///     status: "Yes".into(),
///     reason: "Reconciled".into(),
///     message: String::new(),
///     last_transition_time: Time(Default::default()),
///     observed_generation: None,
/// };
/// let errors: Vec<String> = validate_conditions(&meta, &[ready]).iter().map(|e| e.to_string()).collect();
/// assert_eq!(errors, [r#"shop/web: status.conditions[0].status: "Yes" is not one of True, False, Unknown"#]);
/// ```
pub fn validate_conditions(meta: &ObjectMeta, conditions: &[Condition]) -> Vec<FieldError> {
    let mut p = Problems::new(meta);
    let mut first_index: HashMap<&str, usize> = HashMap::new();
    for (i, condition) in conditions.iter().enumerate() {
        let path = format!("status.conditions[{i}]");
        p.check(
            format!("{path}.type"),
            syntax::condition_type(&condition.type_),
        );
        // The list is keyed by type (`x-kubernetes-list-type: map`).
        if let Some(first) = first_index.insert(&condition.type_, i) {
            p.add(
                format!("{path}.type"),
                format!(
                    "duplicate condition type {:?} (also status.conditions[{first}])",
                    condition.type_
                ),
            );
        }
        if !CONDITION_STATUSES.contains(&condition.status.as_str()) {
            p.add(
                format!("{path}.status"),
                format!(
                    "{:?} is not one of {}",
                    condition.status,
                    CONDITION_STATUSES.join(", ")
                ),
            );
        }
        p.check(
            format!("{path}.reason"),
            syntax::condition_reason(&condition.reason),
        );
        let chars = condition.message.chars().count();
        if chars > CONDITION_MESSAGE_MAX {
            p.add(
                format!("{path}.message"),
                format!("message is {chars} characters, more than {CONDITION_MESSAGE_MAX}"),
            );
        }
        p.at_least(
            format!("{path}.observedGeneration"),
            condition.observed_generation,
            0,
        );
    }
    p.errors
}
