//! Custom resource -> [`Route`]. An object without a namespace is taken to be
//! in `default` (as `kubectl` does). Validation is the `api` crate's job; this
//! module runs it first and then only converts, reporting the few things that
//! cannot be represented (a port out of range, a header name that is not a
//! valid HTTP token) as [`FieldError`]s too, so nothing panics on bad input.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use api::validation::{FieldError, HostPattern, parse_go_duration};
use api::{HTTPScaledObject, HeaderMatch, InterceptorRoute};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::route::*;

/// Builds a [`Cx`] from an object's `metadata` (a k8s-openapi `ObjectMeta`,
/// read field by field so this crate needs no k8s-openapi dependency).
macro_rules! cx_from_meta {
    ($meta:expr) => {{
        let meta = &$meta;
        Cx::new(
            meta.namespace.as_deref(),
            meta.name.as_deref(),
            meta.creation_timestamp
                .as_ref()
                .map(|t| SystemTime::from(t.0)),
            meta.resource_version.as_deref(),
            meta.generation,
        )
    }};
}

/// Default concurrency / request-rate target (upstream).
const DEFAULT_TARGET: i64 = 100;
/// Default request-rate window (upstream `1m`).
const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Default request-rate granularity (upstream `1s`).
const DEFAULT_GRANULARITY: Duration = Duration::from_secs(1);
/// Default `coldStartTimeoutFailoverRef.timeoutSeconds`.
const DEFAULT_FAILOVER_WAIT: Duration = Duration::from_secs(30);
/// Namespace assumed for an object without one (as `kubectl` does).
const DEFAULT_NAMESPACE: &str = "default";

/// `Ok` without errors, else all of them.
fn none_or_all(errors: Vec<FieldError>) -> Result<(), Vec<FieldError>> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Compiles an `HTTPScaledObject` into a [`Route`], after running
/// [`api::validate_http_scaled_object`].
///
/// One rule: `hosts` (none, or `*`, means every host), `pathPrefixes` (none
/// means `/`) and `headers`; scaling from `scalingMetric`, else
/// `targetPendingRequests`, else 100 concurrency.
///
/// ```
/// let obj: api::HTTPScaledObject = api::yaml::from_str(r#"
/// apiVersion: http.keda.sh/v1alpha1
/// kind: HTTPScaledObject
/// metadata: {name: app, namespace: team}
/// spec:
///   hosts: [App.Example.com]
///   scaleTargetRef: {name: app, service: app-svc, port: 8080}
/// "#).unwrap();
/// let route = routing::compile_http_scaled_object(&obj).unwrap();
/// assert_eq!(&**route.key(), "team/app");
/// assert_eq!(route.target.port, routing::PortRef::Number(8080));
/// assert_eq!(route.scaling.concurrency.unwrap().target_value, 100);
/// ```
pub fn compile_http_scaled_object(obj: &HTTPScaledObject) -> Result<Route, Vec<FieldError>> {
    none_or_all(api::validate_http_scaled_object(obj))?;
    let mut cx = cx_from_meta!(obj.metadata);
    let spec = &obj.spec;

    let hosts = cx.hosts("spec.hosts", spec.hosts.as_deref().unwrap_or_default());
    let paths = normalize_paths(
        spec.path_prefixes
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(String::as_str),
    );
    let headers = cx.headers("spec.headers", spec.headers.as_deref().unwrap_or_default());
    let rules = vec![Rule {
        hosts,
        paths,
        headers,
    }];

    let str_ref = &spec.scale_target_ref;
    let target = cx.target(
        "spec.scaleTargetRef",
        &str_ref.service,
        str_ref.port,
        str_ref.port_name.as_deref(),
    );

    let timeouts = match &spec.timeouts {
        Some(t) => Timeouts {
            readiness: cx.duration("spec.timeouts.conditionWait", t.condition_wait.as_deref()),
            request: None,
            response_header: cx
                .duration("spec.timeouts.responseHeader", t.response_header.as_deref()),
        },
        None => Timeouts::default(),
    };

    let fallback = spec.cold_start_timeout_failover_ref.as_ref().map(|f| {
        let field = "spec.coldStartTimeoutFailoverRef";
        // 0 is no override (upstream): the readiness timeout decides.
        let wait = match f.timeout_seconds {
            None => Some(DEFAULT_FAILOVER_WAIT),
            Some(0) => None,
            Some(s) => match u64::try_from(s) {
                Ok(s) => Some(Duration::from_secs(s)),
                Err(_) => {
                    cx.error(format!("{field}.timeoutSeconds"), "must not be negative");
                    None
                }
            },
        };
        Box::new(Fallback {
            target: cx.target(field, &f.service, f.port, f.port_name.as_deref()),
            wait,
        })
    });

    let metric = spec.scaling_metric.clone().unwrap_or_default();
    let mut scaling = cx.scaling("spec.scalingMetric", &metric);
    if scaling.concurrency.is_none() && scaling.request_rate.is_none() {
        scaling.concurrency = Some(ConcurrencyTarget {
            target_value: spec
                .target_pending_requests
                .map(i64::from)
                .unwrap_or(DEFAULT_TARGET),
        });
    }

    cx.finish(
        SourceKind::HttpScaledObject,
        rules,
        target,
        timeouts,
        ColdStart {
            fallback,
            placeholder: None,
        },
        Vec::new(),
        scaling,
    )
}

/// Compiles an `InterceptorRoute` into a [`Route`], after running
/// [`api::validate_interceptor_route`].
///
/// Each of `spec.rules` becomes a forwarding [`Rule`]; an `InterceptorRoute`
/// without rules routes nothing (as upstream), though its key stays in the
/// table (and in `/queue`). Static routes keep their own rules, consulted
/// only for requests the forwarding rules matched.
///
/// ```
/// let obj: api::InterceptorRoute = api::yaml::from_str(r#"
/// apiVersion: http.keda.sh/v1beta1
/// kind: InterceptorRoute
/// metadata: {name: app, namespace: team}
/// spec:
///   target: {service: app-svc, portName: http}
///   rules: [{hosts: ["*.example.com"], paths: [{value: /api/}]}]
///   scalingMetric: {concurrency: {targetValue: 10}}
/// "#).unwrap();
/// let route = routing::compile_interceptor_route(&obj).unwrap();
/// assert_eq!(&*route.rules()[0].paths()[0], "/api");
/// assert_eq!(route.target.port, routing::PortRef::Name("http".into()));
/// ```
pub fn compile_interceptor_route(obj: &InterceptorRoute) -> Result<Route, Vec<FieldError>> {
    none_or_all(api::validate_interceptor_route(obj))?;
    let mut cx = cx_from_meta!(obj.metadata);
    let spec = &obj.spec;

    let rules = cx.rules("spec.rules", &spec.rules);
    let mut static_routes = Vec::with_capacity(spec.static_routes.len());
    for (i, sr) in spec.static_routes.iter().enumerate() {
        let field = format!("spec.staticRoutes[{i}]");
        static_routes.push(StaticRoute {
            rules: cx.rules(&format!("{field}.rules"), &sr.rules),
            response: cx.static_response(&format!("{field}.response"), &sr.response, 200),
            mode: sr.response_mode,
        });
    }

    let target = cx.target(
        "spec.target",
        &spec.target.service,
        spec.target.port,
        spec.target.port_name.as_deref(),
    );

    let timeouts = match &spec.timeouts {
        Some(t) => Timeouts {
            readiness: cx.duration("spec.timeouts.readiness", t.readiness.as_deref()),
            request: cx.duration("spec.timeouts.request", t.request.as_deref()),
            response_header: cx
                .duration("spec.timeouts.responseHeader", t.response_header.as_deref()),
        },
        None => Timeouts::default(),
    };

    let mut cold_start = ColdStart::default();
    if let Some(cs) = &spec.cold_start {
        cold_start.fallback = cs.fallback.as_ref().map(|f| {
            Box::new(Fallback {
                target: cx.target(
                    "spec.coldStart.fallback.service",
                    &f.service.name,
                    f.service.port,
                    f.service.port_name.as_deref(),
                ),
                wait: None,
            })
        });
        cold_start.placeholder = cs.placeholder.as_ref().map(|p| {
            Box::new(cx.static_response("spec.coldStart.placeholder.response", &p.response, 503))
        });
    }

    let scaling = cx.scaling("spec.scalingMetric", &spec.scaling_metric);

    cx.finish(
        SourceKind::InterceptorRoute,
        rules,
        target,
        timeouts,
        cold_start,
        static_routes,
        scaling,
    )
}

/// Compiles every object, keeping each valid one: an invalid object costs only
/// itself. Returns the routes and every error of the invalid objects.
///
/// ```
/// let (routes, errors) = routing::compile_all(&[], &[]);
/// assert!(routes.is_empty() && errors.is_empty());
/// ```
pub fn compile_all<'a>(
    http_scaled_objects: impl IntoIterator<Item = &'a HTTPScaledObject>,
    interceptor_routes: impl IntoIterator<Item = &'a InterceptorRoute>,
) -> (Vec<Route>, Vec<FieldError>) {
    let mut routes = Vec::new();
    let mut errors = Vec::new();
    let results = http_scaled_objects
        .into_iter()
        .map(compile_http_scaled_object)
        .chain(
            interceptor_routes
                .into_iter()
                .map(compile_interceptor_route),
        );
    for r in results {
        match r {
            Ok(route) => routes.push(route),
            Err(e) => errors.extend(e),
        }
    }
    (routes, errors)
}

/// Normalises configured path prefixes as upstream does: every leading and
/// trailing `/` is trimmed, then one leading `/` put back (`api`, `/api/` and
/// `//api//` are `/api`; `/`, `""` and `//` are `/`). None configured means
/// `/`. Duplicates are removed.
fn normalize_paths<'a>(paths: impl Iterator<Item = &'a str>) -> Vec<Arc<str>> {
    let mut out: Vec<Arc<str>> = Vec::new();
    for p in paths {
        let trimmed = p.trim_matches('/');
        let norm: Arc<str> = Arc::from(format!("/{trimmed}"));
        if !out.contains(&norm) {
            out.push(norm);
        }
    }
    if out.is_empty() {
        out.push(Arc::from("/"));
    }
    out
}

/// Compile context: the object's identity and the errors found so far.
struct Cx {
    object: String,
    namespace: Arc<str>,
    name: Arc<str>,
    meta_created: Option<SystemTime>,
    resource_version: Option<Arc<str>>,
    generation: Option<i64>,
    errors: Vec<FieldError>,
}

impl Cx {
    fn new(
        namespace: Option<&str>,
        name: Option<&str>,
        created: Option<SystemTime>,
        resource_version: Option<&str>,
        generation: Option<i64>,
    ) -> Cx {
        let namespace = namespace.unwrap_or(DEFAULT_NAMESPACE);
        let name = name.unwrap_or_default();
        let mut cx = Cx {
            object: if name.is_empty() {
                "<unnamed>".to_string()
            } else {
                format!("{namespace}/{name}")
            },
            namespace: Arc::from(namespace),
            name: Arc::from(name),
            meta_created: created,
            resource_version: resource_version.map(Arc::from),
            generation,
            errors: Vec::new(),
        };
        if name.is_empty() {
            cx.error("metadata.name".to_string(), "is required");
        }
        cx
    }

    fn error(&mut self, field: String, message: impl Into<String>) {
        self.errors.push(FieldError {
            object: self.object.clone(),
            field,
            message: message.into(),
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        self,
        kind: SourceKind,
        rules: Vec<Rule>,
        target: Target,
        timeouts: Timeouts,
        cold_start: ColdStart,
        static_routes: Vec<StaticRoute>,
        scaling: Scaling,
    ) -> Result<Route, Vec<FieldError>> {
        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        let created_order = self
            .meta_created
            .map(|t| match t.duration_since(SystemTime::UNIX_EPOCH) {
                Ok(d) => d.as_nanos() as i128,
                Err(e) => -(e.duration().as_nanos() as i128),
            })
            .unwrap_or(i128::MAX);
        Ok(Route {
            kind,
            key: Arc::from(self.object.as_str()),
            namespace: self.namespace,
            name: self.name,
            rules,
            created_order,
            target,
            timeouts,
            cold_start,
            static_routes,
            scaling,
            created: self.meta_created,
            resource_version: self.resource_version,
            generation: self.generation,
            counters: Arc::default(),
        })
    }

    fn rules(&mut self, field: &str, rules: &[api::RoutingRule]) -> Vec<Rule> {
        rules
            .iter()
            .enumerate()
            .map(|(i, r)| Rule {
                hosts: self.hosts(&format!("{field}[{i}].hosts"), &r.hosts),
                paths: normalize_paths(r.paths.iter().map(|p| p.value.as_str())),
                headers: self.headers(&format!("{field}[{i}].headers"), &r.headers),
            })
            .collect()
    }

    fn hosts(&mut self, field: &str, hosts: &[String]) -> Vec<HostPattern> {
        let mut out = Vec::with_capacity(hosts.len().max(1));
        for (i, h) in hosts.iter().enumerate() {
            // Already lower-cased, without port, brackets or trailing dot.
            match HostPattern::parse(h) {
                Ok(m) if !out.contains(&m) => out.push(m),
                Ok(_) => {}
                Err(e) => self.error(format!("{field}[{i}]"), e),
            }
        }
        if out.is_empty() {
            out.push(HostPattern::Any);
        }
        out
    }

    fn headers(&mut self, field: &str, headers: &[HeaderMatch]) -> Vec<HeaderFilter> {
        let mut out = Vec::with_capacity(headers.len());
        for (i, h) in headers.iter().enumerate() {
            let name = match HeaderName::from_bytes(h.name.as_bytes()) {
                Ok(n) => n,
                Err(_) => {
                    self.error(format!("{field}[{i}].name"), "not a valid HTTP header name");
                    continue;
                }
            };
            let value = match h.value.as_deref().map(HeaderValue::from_str).transpose() {
                Ok(v) => v,
                Err(_) => {
                    self.error(
                        format!("{field}[{i}].value"),
                        "not a valid HTTP header value",
                    );
                    continue;
                }
            };
            out.push(HeaderFilter { name, value });
        }
        out
    }

    /// A Service in the route's namespace; `field` names the port pair in errors.
    fn target(
        &mut self,
        field: &str,
        service: &str,
        port: Option<i32>,
        port_name: Option<&str>,
    ) -> Target {
        Target {
            service: Arc::from(service),
            namespace: self.namespace.clone(),
            port: self.port(field, port, port_name),
        }
    }

    fn port(&mut self, field: &str, port: Option<i32>, port_name: Option<&str>) -> PortRef {
        match (port, port_name) {
            (Some(p), _) => match u16::try_from(p) {
                Ok(p) if p != 0 => PortRef::Number(p),
                _ => {
                    self.error(format!("{field}.port"), "must be between 1 and 65535");
                    PortRef::Number(0)
                }
            },
            (None, Some(n)) if !n.is_empty() => PortRef::Name(Arc::from(n)),
            _ => {
                self.error(
                    format!("{field}.port"),
                    "one of port or portName is required",
                );
                PortRef::Number(0)
            }
        }
    }

    fn duration(&mut self, field: &str, value: Option<&str>) -> Option<Duration> {
        let value = value?;
        match parse_go_duration(value) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(field.to_string(), e);
                None
            }
        }
    }

    fn scaling(&mut self, field: &str, m: &api::ScalingMetric) -> Scaling {
        Scaling {
            concurrency: m.concurrency.as_ref().map(|c| ConcurrencyTarget {
                target_value: c.target_value.unwrap_or(DEFAULT_TARGET),
            }),
            request_rate: m.request_rate.as_ref().map(|r| RequestRateTarget {
                target_value: r.target_value.unwrap_or(DEFAULT_TARGET),
                window: self
                    .duration(&format!("{field}.requestRate.window"), r.window.as_deref())
                    .unwrap_or(DEFAULT_WINDOW),
                granularity: self
                    .duration(
                        &format!("{field}.requestRate.granularity"),
                        r.granularity.as_deref(),
                    )
                    .unwrap_or(DEFAULT_GRANULARITY),
            }),
        }
    }

    fn static_response(
        &mut self,
        field: &str,
        r: &api::StaticResponse,
        default_status: u16,
    ) -> StaticResponse {
        let status = match r.status_code {
            None => StatusCode::from_u16(default_status).unwrap_or(StatusCode::OK),
            Some(code) => match u16::try_from(code)
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
            {
                Some(s) => s,
                None => {
                    self.error(format!("{field}.statusCode"), "not an HTTP status code");
                    StatusCode::OK
                }
            },
        };
        let body = match (&r.body, &r.body_from_config_map) {
            (Some(b), _) => ResponseBody::Inline(Bytes::from(b.clone())),
            (None, Some(cm)) => ResponseBody::ConfigMap {
                name: Arc::from(cm.name.as_str()),
                key: Arc::from(cm.key.as_deref().unwrap_or_default()),
            },
            (None, None) => ResponseBody::Inline(Bytes::new()),
        };
        let mut headers = HeaderMap::with_capacity(r.headers.len());
        for (k, v) in &r.headers {
            match (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                (Ok(k), Ok(v)) => {
                    headers.append(k, v);
                }
                _ => self.error(
                    format!("{field}.headers[{k}]"),
                    "not a valid HTTP header name and value",
                ),
            }
        }
        StaticResponse {
            status,
            body,
            headers,
        }
    }
}
