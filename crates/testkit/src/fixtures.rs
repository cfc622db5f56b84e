//! Builders for the objects tests write: HTTPScaledObjects,
//! InterceptorRoutes, Services and EndpointSlices, as the JSON an API server
//! stores (`apiVersion` and `kind` come from the types' `kube::Resource`
//! impls, so no test spells a CRD identity).
//!
//! Every builder starts from `new(namespace, name)`, takes the fields a test
//! cares about and ends with [`json`](Fixture::json) (or
//! [`parse`](Fixture::parse) into a typed object).
//!
//! ```
//! use testkit::fixtures::{Hso, Ir, Slice, Svc};
//! let hso = Hso::new("ns", "app").host("a.example").service("svc", 8080).path_prefix("/x").json();
//! assert_eq!(hso["spec"]["scaleTargetRef"]["service"], "svc");
//! let ir = Ir::new("ns", "app").host("a.example").service("svc", 80).json();
//! assert_eq!(ir["kind"], "InterceptorRoute");
//! let svc = Svc::new("ns", "svc").port("http", 80).json();
//! let slice = Slice::new("ns", "svc-1", "svc").port("http", 8080).ready("10.0.0.1").not_ready("10.0.0.2").json();
//! # let _ = (svc, slice);
//! ```

use std::marker::PhantomData;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use listwatch::{Gvr, ResourceDef};
use serde_json::{Map, Value, json};

/// One object under construction: metadata common to every kind, plus the
/// kind-specific part `K`.
#[derive(Debug, Clone)]
pub struct Fixture<K> {
    namespace: String,
    name: String,
    resource_version: Option<String>,
    created: Option<String>,
    labels: Map<String, Value>,
    body: K,
}

/// The kind-specific part of a [`Fixture`].
pub trait Body {
    /// The Kubernetes type whose identity (`apiVersion`, `kind`) the object takes.
    type Resource: kube::Resource<DynamicType = ()>;
    /// The top-level fields besides `apiVersion`, `kind` and `metadata`.
    fn fields(&self, name: &str) -> Map<String, Value>;
}

impl<K: Body> Fixture<K> {
    fn with(namespace: &str, name: &str, body: K) -> Self {
        Fixture {
            namespace: namespace.to_string(),
            name: name.to_string(),
            resource_version: None,
            created: None,
            labels: Map::new(),
            body,
        }
    }

    /// Sets `metadata.resourceVersion`.
    pub fn resource_version(mut self, rv: &str) -> Self {
        self.resource_version = Some(rv.to_string());
        self
    }

    /// Sets `metadata.creationTimestamp` (RFC 3339).
    pub fn created(mut self, timestamp: &str) -> Self {
        self.created = Some(timestamp.to_string());
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_string(), json!(value));
        self
    }

    /// The object as JSON.
    pub fn json(&self) -> Value {
        let mut metadata = json!({"name": self.name, "namespace": self.namespace});
        if let Some(rv) = &self.resource_version {
            metadata["resourceVersion"] = json!(rv);
        }
        if let Some(ts) = &self.created {
            metadata["creationTimestamp"] = json!(ts);
        }
        if !self.labels.is_empty() {
            metadata["labels"] = Value::Object(self.labels.clone());
        }
        let mut obj = Map::new();
        obj.insert(
            "apiVersion".into(),
            json!(<K::Resource as kube::Resource>::api_version(&())),
        );
        obj.insert(
            "kind".into(),
            json!(<K::Resource as kube::Resource>::kind(&())),
        );
        obj.insert("metadata".into(), metadata);
        obj.extend(self.body.fields(&self.name));
        Value::Object(obj)
    }

    /// The object as one document of a YAML stream (JSON is YAML), for a
    /// routes directory file: `---`, the JSON, a newline.
    pub fn yaml_document(&self) -> String {
        format!("---\n{}\n", self.json())
    }

    /// The object parsed into `T` (a typed object or a `DynamicObject`).
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_value(self.json()).expect("a fixture parses")
    }

    /// The group/version/resource of this kind.
    pub fn gvr() -> Gvr
    where
        <K::Resource as kube::Resource>::Scope: listwatch::Scope,
    {
        ResourceDef::of::<K::Resource>().gvr().clone()
    }
}

/// An `HTTPScaledObject`: no hosts or path prefixes unless added; the scale
/// target is a `Deployment` named like the object, reached through a Service
/// named like the object on port 8080 unless [`service`](Fixture::service)
/// says otherwise.
pub type Hso = Fixture<RouteBody<api::HTTPScaledObject>>;

/// An `InterceptorRoute` with one rule (hosts and path prefixes added to it),
/// a concurrency target of 10, and a Service named like the object on port
/// 80 unless [`service`](Fixture::service) says otherwise.
pub type Ir = Fixture<RouteBody<api::InterceptorRoute>>;

/// The spec of an [`Hso`] or an [`Ir`]: what requests match, where they go.
#[derive(Debug, Clone)]
pub struct RouteBody<K> {
    hosts: Vec<String>,
    paths: Vec<String>,
    service: Option<(String, Value)>,
    extra: Map<String, Value>,
    kind: PhantomData<K>,
}

impl<K> Fixture<RouteBody<K>>
where
    RouteBody<K>: Body,
{
    /// `namespace/name`.
    pub fn new(namespace: &str, name: &str) -> Self {
        let body = RouteBody {
            hosts: Vec::new(),
            paths: Vec::new(),
            service: None,
            extra: Map::new(),
            kind: PhantomData,
        };
        Fixture::with(namespace, name, body)
    }

    /// Adds a host.
    pub fn host(mut self, host: &str) -> Self {
        self.body.hosts.push(host.to_string());
        self
    }

    /// Adds a path prefix.
    pub fn path_prefix(mut self, prefix: &str) -> Self {
        self.body.paths.push(prefix.to_string());
        self
    }

    /// The Service and port requests go to.
    pub fn service(mut self, service: &str, port: i32) -> Self {
        self.body.service = Some((service.to_string(), json!({"port": port})));
        self
    }

    /// The Service and port, by name (`portName`), requests go to.
    pub fn service_port_name(mut self, service: &str, port_name: &str) -> Self {
        self.body.service = Some((service.to_string(), json!({"portName": port_name})));
        self
    }

    /// Sets any other spec field (`replicas`, `timeouts`, `coldStart`, ...).
    pub fn spec(mut self, field: &str, value: Value) -> Self {
        self.body.extra.insert(field.to_string(), value);
        self
    }
}

impl<K> RouteBody<K> {
    /// Adds `service` and `port` or `portName` to `target`: the Service named
    /// like the object on `default_port` unless set.
    fn target(&self, target: &mut Value, name: &str, default_port: i32) {
        let (service, port) = self
            .service
            .clone()
            .unwrap_or_else(|| (name.to_string(), json!({"port": default_port})));
        target["service"] = json!(service);
        if let Value::Object(port) = port {
            target.as_object_mut().expect("an object").extend(port);
        }
    }
}

impl Body for RouteBody<api::HTTPScaledObject> {
    type Resource = api::HTTPScaledObject;

    fn fields(&self, name: &str) -> Map<String, Value> {
        let mut target = json!({"name": name, "kind": "Deployment", "apiVersion": "apps/v1"});
        self.target(&mut target, name, 8080);
        let mut spec = json!({"scaleTargetRef": target});
        if !self.hosts.is_empty() {
            spec["hosts"] = json!(self.hosts);
        }
        if !self.paths.is_empty() {
            spec["pathPrefixes"] = json!(self.paths);
        }
        with_spec(spec, &self.extra)
    }
}

impl Body for RouteBody<api::InterceptorRoute> {
    type Resource = api::InterceptorRoute;

    fn fields(&self, name: &str) -> Map<String, Value> {
        let mut target = json!({});
        self.target(&mut target, name, 80);
        let mut rule = json!({});
        if !self.hosts.is_empty() {
            rule["hosts"] = json!(self.hosts);
        }
        if !self.paths.is_empty() {
            let paths: Vec<Value> = self.paths.iter().map(|p| json!({"value": p})).collect();
            rule["paths"] = json!(paths);
        }
        let spec = json!({
            "target": target,
            "rules": [rule],
            "scalingMetric": {"concurrency": {"targetValue": 10}},
        });
        with_spec(spec, &self.extra)
    }
}

fn with_spec(mut spec: Value, extra: &Map<String, Value>) -> Map<String, Value> {
    for (k, v) in extra {
        spec[k] = v.clone();
    }
    let mut fields = Map::new();
    fields.insert("spec".into(), spec);
    fields
}

/// A `Service` with the ports added (none unless added).
pub type Svc = Fixture<SvcBody>;

/// The spec of a [`Svc`].
#[derive(Debug, Clone, Default)]
pub struct SvcBody {
    ports: Vec<Value>,
}

impl Svc {
    /// `namespace/name`.
    pub fn new(namespace: &str, name: &str) -> Self {
        Fixture::with(namespace, name, SvcBody::default())
    }

    /// Adds a port; an empty `name` leaves the port unnamed.
    pub fn port(mut self, name: &str, port: u16) -> Self {
        self.body.ports.push(named_port(name, port));
        self
    }
}

impl Body for SvcBody {
    type Resource = Service;

    fn fields(&self, _name: &str) -> Map<String, Value> {
        with_spec(json!({"ports": self.ports}), &Map::new())
    }
}

/// An IPv4 `EndpointSlice` of a Service, with ready and not-ready addresses.
pub type Slice = Fixture<SliceBody>;

/// The body of a [`Slice`].
#[derive(Debug, Clone, Default)]
pub struct SliceBody {
    ports: Vec<Value>,
    endpoints: Vec<Value>,
}

impl Slice {
    /// `namespace/name`, a slice of the Service `service`.
    pub fn new(namespace: &str, name: &str, service: &str) -> Self {
        Fixture::with(namespace, name, SliceBody::default())
            .label("kubernetes.io/service-name", service)
    }

    /// Adds a port; an empty `name` leaves the port unnamed.
    pub fn port(mut self, name: &str, port: u16) -> Self {
        self.body.ports.push(named_port(name, port));
        self
    }

    /// Adds a ready endpoint.
    pub fn ready(self, address: &str) -> Self {
        self.endpoint(address, true)
    }

    /// Adds an endpoint that is not ready.
    pub fn not_ready(self, address: &str) -> Self {
        self.endpoint(address, false)
    }

    fn endpoint(mut self, address: &str, ready: bool) -> Self {
        self.body
            .endpoints
            .push(json!({"addresses": [address], "conditions": {"ready": ready}}));
        self
    }
}

impl Body for SliceBody {
    type Resource = EndpointSlice;

    fn fields(&self, _name: &str) -> Map<String, Value> {
        let Value::Object(fields) = json!({
            "addressType": "IPv4",
            "ports": self.ports,
            "endpoints": self.endpoints,
        }) else {
            unreachable!("an object literal")
        };
        fields
    }
}

fn named_port(name: &str, port: u16) -> Value {
    if name.is_empty() {
        json!({"port": port})
    } else {
        json!({"name": name, "port": port})
    }
}
