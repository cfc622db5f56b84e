//! The Service + EndpointSlice ready-cache: which Service ports exist (with
//! their names and `appProtocol`) and which endpoint addresses are ready, per
//! Service and port, plus an event-driven wait for "this Service has a ready
//! endpoint" (the interceptor's cold-start hold).
//!
//! One writer (the sync machinery, from Kubernetes watches or a routes
//! directory) updates it; readers load an immutable snapshot with one atomic
//! operation. Waiters are woken per Service, so one Service turning ready
//! does not wake requests held for another.
//!
//! Port resolution lives here, in one place: [`ServiceBackends::backend`]
//! turns (namespace, Service, port reference, addressing) into the
//! [`Backend`] to dial, its authority and protocol. The authorities are
//! formatted when a Service or EndpointSlice is applied (`<service>.<namespace>:<port>`
//! per Service port, `ip:port` per ready endpoint), so a request only
//! clones an `Arc`.
//!
//! Beside the Services it keeps the data of the ConfigMaps labelled
//! [`RESPONSE_BODY_LABEL`]`: "true"` ([`ResponseBodies`]), the bodies a
//! static response names with `bodyFromConfigMap`, as upstream's
//! interceptor caches exactly those ConfigMaps.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use routing::PortRef;
use std::sync::Mutex;
use tokio::sync::{Notify, watch};

/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

pub use api::{RESPONSE_BODY_LABEL, RESPONSE_BODY_SELECTOR};

/// The `data` of one response-body ConfigMap, by key.
pub type ConfigMapData = Arc<BTreeMap<String, Bytes>>;

/// The response-body ConfigMaps, by namespace and name: an immutable
/// snapshot, replaced whole on a change (they change rarely).
#[derive(Debug, Default, Clone)]
pub struct ResponseBodies {
    maps: HashMap<String, HashMap<String, ConfigMapData>>,
}

impl ResponseBodies {
    /// The data of ConfigMap `namespace/name`, if it is known and labelled.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&ConfigMapData> {
        self.maps.get(namespace)?.get(name)
    }

    /// Number of ConfigMaps kept.
    pub fn len(&self) -> usize {
        self.maps.values().map(HashMap::len).sum()
    }

    /// True when no ConfigMap is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps `cm` when it carries the label, forgets it otherwise (a
    /// ConfigMap whose label was removed stops serving).
    fn put(&mut self, cm: &ConfigMap) {
        let (Some(namespace), Some(name)) = (&cm.metadata.namespace, &cm.metadata.name) else {
            return;
        };
        let labelled = cm
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(RESPONSE_BODY_LABEL))
            .is_some_and(|v| v == "true");
        if !labelled {
            self.remove(namespace, name);
            return;
        }
        let data = cm
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), Bytes::from(v.clone())))
            .collect();
        self.maps
            .entry(namespace.clone())
            .or_default()
            .insert(name.clone(), Arc::new(data));
    }

    fn remove(&mut self, namespace: &str, name: &str) {
        if let Some(m) = self.maps.get_mut(namespace) {
            m.remove(name);
            if m.is_empty() {
                self.maps.remove(namespace);
            }
        }
    }
}

/// One port of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePortInfo {
    /// Port name (empty when unnamed).
    pub name: String,
    /// Service port number.
    pub port: u16,
    /// `appProtocol`, e.g. `kubernetes.io/h2c`.
    pub app_protocol: Option<String>,
    /// Target port on the pods, by number or name.
    pub target_port: Option<IntOrString>,
}

impl ServicePortInfo {
    /// True when the port says `appProtocol: kubernetes.io/h2c` (the
    /// backend speaks HTTP/2 with prior knowledge).
    pub fn is_h2c(&self) -> bool {
        self.app_protocol.as_deref() == Some("kubernetes.io/h2c")
    }
}

/// The protocol a backend port speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendProtocol {
    /// HTTP/1.1 (the default).
    Http1,
    /// HTTP/2 with prior knowledge (`appProtocol: kubernetes.io/h2c`).
    H2c,
}

/// Where to forward a request: the authority to dial and its protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// `<service>.<namespace>:<port>`, or a ready endpoint's `ip:port`.
    pub authority: Arc<str>,
    /// What the port speaks.
    pub protocol: BackendProtocol,
}

/// How a backend is addressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressing {
    /// By the Service's name (`<service>.<namespace>:<port>`, cluster DNS).
    Service,
    /// A ready endpoint directly: the `turn`-th modulo their number (round
    /// robin when `turn` counts requests).
    Pod {
        /// Which endpoint, modulo the number of ready ones.
        turn: usize,
    },
}

/// A port resolved for forwarding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedPort {
    /// The Service port number (for `<service>.<namespace>:<port>`).
    pub port: u16,
    /// The Service port's name.
    pub name: String,
    /// True when the Service port says `appProtocol: kubernetes.io/h2c`.
    pub h2c: bool,
}

/// Why a port could not be resolved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The Service is not known.
    #[error("service {namespace}/{service} not found")]
    NoService {
        /// Namespace.
        namespace: String,
        /// Service name.
        service: String,
    },
    /// The Service has no port with that name.
    #[error("service {namespace}/{service} has no port named {port}")]
    NoPort {
        /// Namespace.
        namespace: String,
        /// Service name.
        service: String,
        /// The port name asked for.
        port: String,
    },
    /// Direct-pod addressing found no ready endpoint behind the port.
    #[error("service {namespace}/{service} has no ready endpoint for port {port}")]
    NoReadyEndpoint {
        /// Namespace.
        namespace: String,
        /// Service name.
        service: String,
        /// The port asked for (number or name).
        port: String,
    },
}

/// A Service, reduced to what routing needs: its ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceDef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Ports.
    pub ports: Vec<ServicePortInfo>,
}

impl ServiceDef {
    /// The routing-relevant part of a Service (`None` without a name).
    pub fn from_service(svc: &Service) -> Option<ServiceDef> {
        let (namespace, name) = service_key(svc)?;
        Some(ServiceDef {
            namespace,
            name,
            ports: service_ports(svc),
        })
    }
}

/// An EndpointSlice, reduced to what readiness needs: its Service, ports and
/// ready addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceDef {
    /// Namespace.
    pub namespace: String,
    /// Slice name.
    pub name: String,
    /// The Service it belongs to (label `kubernetes.io/service-name`).
    pub service: String,
    /// (port name, port number) of the slice.
    pub ports: Vec<(String, u16)>,
    /// Addresses of the ready endpoints.
    pub ready: Vec<IpAddr>,
}

impl SliceDef {
    /// The readiness-relevant part of an EndpointSlice (`None` without a name
    /// or a Service label).
    pub fn from_slice(slice: &EndpointSlice) -> Option<SliceDef> {
        slice_def(slice)
    }
}

/// One slice as the writer keeps it.
#[derive(Debug)]
struct SliceInfo {
    name: Arc<str>,
    ports: Box<[(Arc<str>, u16)]>,
    ready: Box<[IpAddr]>,
}

/// An endpoint port name and the ready addresses behind it.
#[derive(Debug)]
struct ReadyPort {
    name: Arc<str>,
    addrs: Arc<[SocketAddr]>,
    /// `addrs`, formatted as authorities (`ip:port`, `[ip6]:port`).
    authorities: Box<[Arc<str>]>,
}

/// A Service's ports and, for each, its authority by name.
#[derive(Clone, Debug)]
struct ServicePorts {
    info: Arc<[ServicePortInfo]>,
    /// `<service>.<namespace>:<port>` for each of `info`.
    authorities: Arc<[Arc<str>]>,
}

/// What is known of one Service, precomputed for the request path.
#[derive(Debug, Default)]
pub struct ServiceEntry {
    /// The Service's ports (empty when only EndpointSlices are known).
    pub ports: Arc<[ServicePortInfo]>,
    /// Whether the Service object itself is known.
    pub has_service: bool,
    /// `<service>.<namespace>:<port>` for each of `ports`.
    service_authorities: Arc<[Arc<str>]>,
    /// Ready endpoint addresses per endpoint port name.
    ready_by_port: Box<[ReadyPort]>,
    /// Count of ready addresses over all slices.
    ready_count: usize,
}

impl ServiceEntry {
    /// True when at least one endpoint is ready.
    pub fn has_ready(&self) -> bool {
        self.ready_count > 0
    }

    /// Resolves a route's port against this Service.
    pub fn resolve(&self, port: &PortRef) -> Option<&ServicePortInfo> {
        self.port_index(port).map(|i| &self.ports[i])
    }

    fn port_index(&self, port: &PortRef) -> Option<usize> {
        match port {
            PortRef::Number(n) => self.ports.iter().position(|p| p.port == *n),
            PortRef::Name(name) => self.ports.iter().position(|p| p.name == **name),
        }
    }

    /// Ready endpoint addresses for a Service port (by the Service port's
    /// name, which is how EndpointSlice ports are named).
    pub fn ready_addresses(&self, port: &PortRef) -> Option<&Arc<[SocketAddr]>> {
        self.ready_port(port).map(|p| &p.addrs)
    }

    fn ready_port(&self, port: &PortRef) -> Option<&ReadyPort> {
        let name: &str = match (port, self.resolve(port)) {
            (_, Some(p)) => &p.name,
            (PortRef::Name(name), None) => name,
            // Without the Service object a numbered port can only match an
            // unnamed (single-port) slice.
            (PortRef::Number(_), None) => "",
        };
        self.ready_by_port
            .iter()
            .find(|p| *p.name == *name)
            .or_else(|| {
                // A single-port slice serves a single-port Service whatever the names.
                (self.ready_by_port.len() == 1).then(|| &self.ready_by_port[0])
            })
    }
}

/// A port reference looked up in what is known of a Service.
#[derive(Clone, Copy, Debug)]
enum PortLookup<'a> {
    /// The Service object is not known (maybe its EndpointSlices are).
    NoService,
    /// A port the Service lists: its entry and the port's index.
    Listed(&'a ServiceEntry, usize),
    /// A port number the Service does not list (dialed as given).
    Unlisted(u16),
    /// A port name the Service does not have.
    NoPortNamed(&'a str),
}

/// What a snapshot knows of one Service, looked up once: whether it has a
/// ready endpoint, and where to send its requests.
#[derive(Clone, Copy, Debug)]
pub struct ServiceBackends<'a> {
    namespace: &'a str,
    service: &'a str,
    entry: Option<&'a ServiceEntry>,
}

impl ServiceBackends<'_> {
    /// True when the Service has a ready endpoint.
    pub fn has_ready(&self) -> bool {
        self.entry.is_some_and(ServiceEntry::has_ready)
    }

    /// What the Service says of `port`.
    fn lookup<'p>(&self, port: &'p PortRef) -> PortLookup<'p>
    where
        Self: 'p,
    {
        let Some(entry) = self.entry.filter(|e| e.has_service) else {
            return PortLookup::NoService;
        };
        match (entry.port_index(port), port) {
            (Some(i), _) => PortLookup::Listed(entry, i),
            (None, PortRef::Number(n)) => PortLookup::Unlisted(*n),
            (None, PortRef::Name(name)) => PortLookup::NoPortNamed(name),
        }
    }

    /// `<service>.<namespace>:<port>`, for a port not formatted in advance.
    fn service_authority(&self, port: u16) -> Arc<str> {
        Arc::from(format!("{}.{}:{port}", self.service, self.namespace))
    }

    fn no_service(&self) -> ResolveError {
        ResolveError::NoService {
            namespace: self.namespace.to_string(),
            service: self.service.to_string(),
        }
    }

    fn no_port(&self, name: &str) -> ResolveError {
        ResolveError::NoPort {
            namespace: self.namespace.to_string(),
            service: self.service.to_string(),
            port: name.to_string(),
        }
    }

    /// The Service port to dial for `port`; see
    /// [`EndpointsSnapshot::resolve`].
    pub fn resolve(&self, port: &PortRef) -> Result<ResolvedPort, ResolveError> {
        match self.lookup(port) {
            PortLookup::Listed(e, i) => Ok(ResolvedPort {
                port: e.ports[i].port,
                name: e.ports[i].name.clone(),
                h2c: e.ports[i].is_h2c(),
            }),
            PortLookup::Unlisted(port) => Ok(ResolvedPort {
                port,
                name: String::new(),
                h2c: false,
            }),
            PortLookup::NoService => Err(self.no_service()),
            PortLookup::NoPortNamed(name) => Err(self.no_port(name)),
        }
    }

    /// The backend for requests to `port` of the Service: its authority and
    /// protocol. Allocates nothing unless it fails, or unless a port number
    /// the Service does not list (or of a Service not known) is addressed
    /// by Service name.
    ///
    /// - A port the Service names `appProtocol: kubernetes.io/h2c` is
    ///   [`BackendProtocol::H2c`]; anything else HTTP/1.1.
    /// - A port name the Service does not have fails
    ///   ([`ResolveError::NoPort`]), as does a port name of a Service that is
    ///   not known with [`Addressing::Service`] ([`ResolveError::NoService`]).
    /// - A port number is dialed as given even when the Service (or the
    ///   port) is not known, as upstream does.
    /// - [`Addressing::Pod`] picks among the ready endpoints of the port
    ///   ([`ResolveError::NoReadyEndpoint`] when there is none); the
    ///   EndpointSlices alone suffice.
    pub fn backend(&self, port: &PortRef, addressing: Addressing) -> Result<Backend, ResolveError> {
        let lookup = self.lookup(port);
        let protocol = match lookup {
            PortLookup::Listed(e, i) if e.ports[i].is_h2c() => BackendProtocol::H2c,
            _ => BackendProtocol::Http1,
        };
        let authority = match (addressing, lookup) {
            (_, PortLookup::NoPortNamed(name)) => return Err(self.no_port(name)),
            (Addressing::Pod { turn }, _) => {
                let ready = self
                    .entry
                    .and_then(|e| e.ready_port(port))
                    .filter(|p| !p.authorities.is_empty())
                    .ok_or_else(|| ResolveError::NoReadyEndpoint {
                        namespace: self.namespace.to_string(),
                        service: self.service.to_string(),
                        port: port.to_string(),
                    })?;
                ready.authorities[turn % ready.authorities.len()].clone()
            }
            (Addressing::Service, PortLookup::Listed(e, i)) => e.service_authorities[i].clone(),
            (Addressing::Service, PortLookup::Unlisted(n)) => self.service_authority(n),
            // A numbered port needs no Service lookup.
            (Addressing::Service, PortLookup::NoService) => match port {
                PortRef::Number(n) => self.service_authority(*n),
                PortRef::Name(_) => return Err(self.no_service()),
            },
        };
        Ok(Backend {
            authority,
            protocol,
        })
    }
}

/// An immutable view of every known Service.
#[derive(Debug, Default, Clone)]
pub struct EndpointsSnapshot {
    /// Persistent maps: publishing a change copies O(log n), not every Service.
    /// The keys are the writer's, shared.
    services: imbl::HashMap<Arc<str>, imbl::HashMap<Arc<str>, Arc<ServiceEntry>>>,
}

impl EndpointsSnapshot {
    /// The entry of `namespace/service`, if known.
    pub fn get(&self, namespace: &str, service: &str) -> Option<&Arc<ServiceEntry>> {
        self.services.get(namespace)?.get(service)
    }

    /// True when `namespace/service` has a ready endpoint.
    pub fn has_ready(&self, namespace: &str, service: &str) -> bool {
        self.get(namespace, service).is_some_and(|e| e.has_ready())
    }

    /// What is known of `namespace/service` (looked up once), for its
    /// readiness and [`backend`](ServiceBackends::backend).
    pub fn service<'a>(&'a self, namespace: &'a str, service: &'a str) -> ServiceBackends<'a> {
        ServiceBackends {
            namespace,
            service,
            entry: self.get(namespace, service).map(|e| &**e),
        }
    }

    /// The backend for `port` of `namespace/service`; see
    /// [`ServiceBackends::backend`].
    pub fn backend(
        &self,
        namespace: &str,
        service: &str,
        port: &PortRef,
        addressing: Addressing,
    ) -> Result<Backend, ResolveError> {
        self.service(namespace, service).backend(port, addressing)
    }

    /// Resolves a route's port to the Service port to dial (the Service
    /// must be known; a port number it does not list is dialed as given).
    pub fn resolve(
        &self,
        namespace: &str,
        service: &str,
        port: &PortRef,
    ) -> Result<ResolvedPort, ResolveError> {
        self.service(namespace, service).resolve(port)
    }

    /// Number of known Services.
    pub fn len(&self) -> usize {
        self.services.values().map(imbl::HashMap::len).sum()
    }

    /// True when no Service is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The shared ready-cache: a snapshot for readers, per-Service wake-ups for
/// waiters, and the writer's working state.
#[derive(Debug)]
pub struct ReadyEndpoints {
    snapshot: ArcSwap<EndpointsSnapshot>,
    bodies: ArcSwap<ResponseBodies>,
    waiters: Mutex<HashMap<(String, String), Arc<Notify>>>,
    synced: watch::Sender<bool>,
    writer: Mutex<WriterState>,
}

/// (namespace, name). Namespaces are interned; the strings are shared with
/// the published snapshot.
type Key = (Arc<str>, Arc<str>);

/// What the writer knows of one Service.
#[derive(Debug, Default)]
struct ServiceState {
    /// The Service's ports; `None` while only its EndpointSlices are known.
    ports: Option<ServicePorts>,
    /// Its slices: usually one.
    slices: Vec<SliceInfo>,
}

#[derive(Debug, Default)]
struct WriterState {
    services: HashMap<Key, ServiceState>,
    /// (namespace, slice name) -> service, to find a slice on delete.
    slice_owner: HashMap<Key, Arc<str>>,
    namespaces: HashSet<Arc<str>>,
    /// Endpoint port names: a handful, shared by thousands of slices.
    port_names: HashSet<Arc<str>>,
}

fn intern(set: &mut HashSet<Arc<str>>, s: &str) -> Arc<str> {
    match set.get(s) {
        Some(a) => a.clone(),
        None => {
            let a: Arc<str> = Arc::from(s);
            set.insert(a.clone());
            a
        }
    }
}

impl WriterState {
    /// The key of `namespace/name` as the map holds it (sharing its
    /// strings), or a new one.
    fn key(&mut self, namespace: &str, name: &str) -> Key {
        let probe = (intern(&mut self.namespaces, namespace), Arc::from(name));
        match self.services.get_key_value(&probe) {
            Some((k, _)) => k.clone(),
            None => probe,
        }
    }

    /// Drops the entry of `key` once nothing is known of it.
    fn prune(&mut self, key: &Key) {
        if self
            .services
            .get(key)
            .is_some_and(|s| s.ports.is_none() && s.slices.is_empty())
        {
            self.services.remove(key);
        }
    }

    fn put_service(&mut self, def: ServiceDef) -> Key {
        let key = self.key(&def.namespace, &def.name);
        let authorities = def
            .ports
            .iter()
            .map(|p| Arc::from(format!("{}.{}:{}", def.name, def.namespace, p.port)))
            .collect();
        self.services.entry(key.clone()).or_default().ports = Some(ServicePorts {
            info: Arc::from(def.ports),
            authorities,
        });
        key
    }

    fn delete_service(&mut self, namespace: &str, name: &str) -> Key {
        let key = self.key(namespace, name);
        if let Some(state) = self.services.get_mut(&key) {
            state.ports = None;
        }
        self.prune(&key);
        key
    }

    /// Inserts or replaces a slice, noting the Services whose readiness may
    /// have changed.
    fn put_slice(&mut self, def: SliceDef, touched: &mut Vec<Key>) {
        self.remove_slice(&def.namespace, &def.name, touched);
        let key = self.key(&def.namespace, &def.service);
        let name: Arc<str> = Arc::from(def.name);
        let ports = def
            .ports
            .into_iter()
            .map(|(n, p)| (intern(&mut self.port_names, &n), p))
            .collect();
        self.slice_owner
            .insert((key.0.clone(), name.clone()), key.1.clone());
        let slices = &mut self.services.entry(key.clone()).or_default().slices;
        slices.reserve_exact(1);
        slices.push(SliceInfo {
            name,
            ports,
            ready: def.ready.into_boxed_slice(),
        });
        touched.push(key);
    }

    /// Removes a slice, noting the Service it belonged to.
    fn remove_slice(&mut self, namespace: &str, name: &str, touched: &mut Vec<Key>) {
        let probe = (intern(&mut self.namespaces, namespace), Arc::from(name));
        let Some(service) = self.slice_owner.remove(&probe) else {
            return;
        };
        let key = (probe.0, service);
        if let Some(state) = self.services.get_mut(&key) {
            state.slices.retain(|s| *s.name != *name);
        }
        self.prune(&key);
        touched.push(key);
    }
}

impl Default for ReadyEndpoints {
    fn default() -> Self {
        ReadyEndpoints {
            snapshot: ArcSwap::from_pointee(EndpointsSnapshot::default()),
            bodies: ArcSwap::from_pointee(ResponseBodies::default()),
            waiters: Mutex::new(HashMap::new()),
            synced: watch::Sender::new(false),
            writer: Mutex::new(WriterState::default()),
        }
    }
}

/// One change to the ready-cache.
#[derive(Debug, Clone)]
pub enum EndpointsChange {
    /// A Service was added or changed.
    ApplyService(Box<Service>),
    /// A Service was deleted.
    DeleteService {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// Every Service (a relist).
    ResetServices(Vec<Service>),
    /// An EndpointSlice was added or changed.
    ApplySlice(Box<EndpointSlice>),
    /// An EndpointSlice was deleted.
    DeleteSlice {
        /// Namespace.
        namespace: String,
        /// Slice name.
        name: String,
    },
    /// Every EndpointSlice (a relist).
    ResetSlices(Vec<EndpointSlice>),
    /// A Service was added or changed (in its compact form).
    PutService(ServiceDef),
    /// An EndpointSlice was added or changed (in its compact form).
    PutSlice(SliceDef),
    /// A ConfigMap was added or changed (kept only with the response-body label).
    ApplyConfigMap(Box<ConfigMap>),
    /// A ConfigMap was deleted.
    DeleteConfigMap {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// Every response-body ConfigMap (a relist).
    ResetConfigMaps(Vec<ConfigMap>),
}

impl ReadyEndpoints {
    /// An empty cache.
    pub fn new() -> Arc<Self> {
        Arc::new(ReadyEndpoints::default())
    }

    /// The current snapshot (one atomic load).
    pub fn load(&self) -> arc_swap::Guard<Arc<EndpointsSnapshot>> {
        self.snapshot.load()
    }

    /// The response-body ConfigMaps (one atomic load).
    pub fn bodies(&self) -> arc_swap::Guard<Arc<ResponseBodies>> {
        self.bodies.load()
    }

    /// True once Services and EndpointSlices (and, when watched, the
    /// response-body ConfigMaps) have been listed once.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    pub(crate) fn mark_synced(&self) {
        self.synced
            .send_if_modified(|s| !std::mem::replace(s, true));
    }

    /// Waits until `namespace/service` has a ready endpoint. Event-driven: it
    /// sleeps until the writer publishes a change to that Service.
    pub async fn wait_ready(&self, namespace: &str, service: &str) {
        loop {
            let notify = self.notifier(namespace, service);
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.load().has_ready(namespace, service) {
                return;
            }
            notified.await;
        }
    }

    fn notifier(&self, namespace: &str, service: &str) -> Arc<Notify> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        waiters
            .entry((namespace.to_string(), service.to_string()))
            .or_default()
            .clone()
    }

    /// Applies a batch of changes and publishes one new snapshot.
    pub fn apply(&self, changes: impl IntoIterator<Item = EndpointsChange>) {
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut touched: Vec<Key> = Vec::new();
        let mut full = false;
        let mut bodies: Option<ResponseBodies> = None;
        for change in changes {
            match change {
                EndpointsChange::ApplyConfigMap(cm) => bodies
                    .get_or_insert_with(|| (**self.bodies.load()).clone())
                    .put(&cm),
                EndpointsChange::DeleteConfigMap { namespace, name } => bodies
                    .get_or_insert_with(|| (**self.bodies.load()).clone())
                    .remove(&namespace, &name),
                EndpointsChange::ResetConfigMaps(list) => {
                    let mut all = ResponseBodies::default();
                    for cm in &list {
                        all.put(cm);
                    }
                    bodies = Some(all);
                }
                EndpointsChange::ApplyService(svc) => {
                    if let Some(def) = ServiceDef::from_service(&svc) {
                        touched.push(writer.put_service(def));
                    }
                }
                EndpointsChange::PutService(def) => touched.push(writer.put_service(def)),
                EndpointsChange::DeleteService { namespace, name } => {
                    touched.push(writer.delete_service(&namespace, &name));
                }
                EndpointsChange::ResetServices(list) => {
                    writer.services.retain(|_, s| {
                        s.ports = None;
                        !s.slices.is_empty()
                    });
                    for def in list.iter().filter_map(ServiceDef::from_service) {
                        writer.put_service(def);
                    }
                    full = true;
                }
                EndpointsChange::ApplySlice(slice) => match slice_def(&slice) {
                    Some(def) => writer.put_slice(def, &mut touched),
                    // No longer a slice of any Service (its label is gone):
                    // its addresses leave the Service it had, as a routes
                    // directory drops such a file.
                    None => {
                        let m = &slice.metadata;
                        if let Some(name) = &m.name {
                            let namespace = m.namespace.as_deref().unwrap_or("default");
                            writer.remove_slice(namespace, name, &mut touched);
                        }
                    }
                },
                EndpointsChange::PutSlice(def) => writer.put_slice(def, &mut touched),
                EndpointsChange::DeleteSlice { namespace, name } => {
                    writer.remove_slice(&namespace, &name, &mut touched);
                }
                EndpointsChange::ResetSlices(list) => {
                    writer.services.retain(|_, s| {
                        s.slices.clear();
                        s.ports.is_some()
                    });
                    writer.slice_owner.clear();
                    let mut ignored = Vec::new();
                    for def in list.iter().filter_map(slice_def) {
                        writer.put_slice(def, &mut ignored);
                    }
                    full = true;
                }
            }
        }
        if let Some(bodies) = bodies {
            self.bodies.store(Arc::new(bodies));
        }
        if !full && touched.is_empty() {
            return; // only ConfigMaps changed: the Services' snapshot stands
        }
        let old = self.snapshot.load_full();
        let mut next = if full {
            EndpointsSnapshot::default()
        } else {
            (*old).clone()
        };
        let keys: Vec<Key> = if full {
            let mut all: Vec<Key> = writer.services.keys().cloned().collect();
            // Services whose readiness may have changed by disappearing.
            for (ns, m) in &old.services {
                all.extend(m.keys().map(|n| (ns.clone(), n.clone())));
            }
            all
        } else {
            touched
        };
        let mut became_ready = Vec::new();
        for key in dedup(keys) {
            let entry = build_entry(&writer, &key);
            let was_ready = old.has_ready(&key.0, &key.1);
            match entry {
                Some(entry) => {
                    if entry.has_ready() && !was_ready {
                        became_ready.push(key.clone());
                    }
                    next.services
                        .entry(key.0)
                        .or_default()
                        .insert(key.1, Arc::new(entry));
                }
                None => {
                    if let Some(m) = next.services.get_mut(&key.0) {
                        m.remove(&key.1);
                        if m.is_empty() {
                            next.services.remove(&key.0);
                        }
                    }
                }
            }
        }
        self.snapshot.store(Arc::new(next));
        drop(old);
        drop(writer);
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        for key in became_ready.into_iter().take_while(|_| !waiters.is_empty()) {
            if let Some(n) = waiters.get(&(key.0.to_string(), key.1.to_string())) {
                n.notify_waiters();
            }
        }
        // Forget wake-ups nobody holds any more.
        waiters.retain(|_, n| Arc::strong_count(n) > 1);
    }
}

fn dedup(mut keys: Vec<Key>) -> Vec<Key> {
    keys.sort();
    keys.dedup();
    keys
}

fn build_entry(writer: &WriterState, key: &Key) -> Option<ServiceEntry> {
    let state = writer.services.get(key)?;
    let (ports, slices) = (&state.ports, &state.slices);
    if ports.is_none() && slices.is_empty() {
        return None;
    }
    let mut by_port: Vec<(Arc<str>, Vec<SocketAddr>)> = Vec::new();
    let mut ready_count = 0;
    for slice in slices {
        ready_count += slice.ready.len();
        for (name, port) in &slice.ports {
            let i = match by_port.iter().position(|(n, _)| n == name) {
                Some(i) => i,
                None => {
                    by_port.push((name.clone(), Vec::new()));
                    by_port.len() - 1
                }
            };
            by_port[i]
                .1
                .extend(slice.ready.iter().map(|ip| SocketAddr::new(*ip, *port)));
        }
    }
    let mut ready_by_port: Vec<ReadyPort> = by_port
        .into_iter()
        .map(|(name, mut addrs)| {
            addrs.sort();
            addrs.dedup();
            ReadyPort {
                name,
                authorities: addrs.iter().map(|a| Arc::from(a.to_string())).collect(),
                addrs: Arc::from(addrs),
            }
        })
        .collect();
    ready_by_port.sort_by(|a, b| a.name.cmp(&b.name));
    Some(ServiceEntry {
        ports: ports
            .as_ref()
            .map_or_else(|| Arc::from([]), |p| p.info.clone()),
        has_service: ports.is_some(),
        service_authorities: ports
            .as_ref()
            .map_or_else(|| Arc::from([]), |p| p.authorities.clone()),
        ready_by_port: ready_by_port.into_boxed_slice(),
        ready_count,
    })
}

fn service_key(svc: &Service) -> Option<(String, String)> {
    Some((
        svc.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        svc.metadata.name.clone()?,
    ))
}

fn service_ports(svc: &Service) -> Vec<ServicePortInfo> {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| {
                    Some(ServicePortInfo {
                        name: p.name.clone().unwrap_or_default(),
                        port: u16::try_from(p.port).ok()?,
                        app_protocol: p.app_protocol.clone(),
                        target_port: p.target_port.clone(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn slice_def(slice: &EndpointSlice) -> Option<SliceDef> {
    let namespace = slice
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = slice.metadata.name.clone()?;
    let service = slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)?
        .clone();
    let ports = slice
        .ports
        .as_ref()
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| {
                    Some((
                        p.name.clone().unwrap_or_default(),
                        u16::try_from(p.port?).ok()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let ready = slice
        .endpoints
        .iter()
        // Kubernetes: a nil `ready` condition means ready.
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .flat_map(|e| e.addresses.iter())
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .collect();
    Some(SliceDef {
        namespace,
        name,
        service,
        ports,
        ready,
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn slice(name: &str, service: &str, ready: &[&str]) -> EndpointsChange {
        EndpointsChange::PutSlice(SliceDef {
            namespace: "ns".into(),
            name: name.into(),
            service: service.into(),
            ports: vec![("http".into(), 9000)],
            ready: ready.iter().map(|a| a.parse().unwrap()).collect(),
        })
    }

    fn service(name: &str) -> EndpointsChange {
        EndpointsChange::PutService(ServiceDef {
            namespace: "ns".into(),
            name: name.into(),
            ports: vec![ServicePortInfo {
                name: "http".into(),
                port: 80,
                app_protocol: None,
                target_port: None,
            }],
        })
    }

    fn ready(e: &ReadyEndpoints, service: &str) -> Vec<String> {
        let snap = e.load();
        let Some(entry) = snap.get("ns", service) else {
            return vec!["<unknown>".into()];
        };
        entry
            .ready_addresses(&PortRef::Name("http".into()))
            .map(|a| a.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }

    fn backend(
        e: &ReadyEndpoints,
        service: &str,
        port: PortRef,
        addressing: Addressing,
    ) -> Result<(String, BackendProtocol), String> {
        e.load()
            .backend("ns", service, &port, addressing)
            .map(|b| (b.authority.to_string(), b.protocol))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn backends_by_service_name_and_by_pod() {
        use BackendProtocol::{H2c, Http1};
        let e = ReadyEndpoints::default();
        e.apply([
            EndpointsChange::PutService(ServiceDef {
                namespace: "ns".into(),
                name: "web".into(),
                ports: vec![
                    ServicePortInfo {
                        name: "http".into(),
                        port: 80,
                        app_protocol: None,
                        target_port: None,
                    },
                    ServicePortInfo {
                        name: "grpc".into(),
                        port: 81,
                        app_protocol: Some("kubernetes.io/h2c".into()),
                        target_port: None,
                    },
                ],
            }),
            EndpointsChange::PutSlice(SliceDef {
                namespace: "ns".into(),
                name: "web-1".into(),
                service: "web".into(),
                ports: vec![("http".into(), 9000), ("grpc".into(), 9001)],
                ready: vec!["10.0.0.2".parse().unwrap(), "fd00::1".parse().unwrap()],
            }),
            slice("lone-1", "lone", &["10.0.0.9"]),
        ]);
        let name = |n: &str| PortRef::Name(n.into());
        let service = Addressing::Service;
        let pod = |turn| Addressing::Pod { turn };

        // By Service name: by port name or number; h2c from appProtocol.
        assert_eq!(
            backend(&e, "web", name("http"), service),
            Ok(("web.ns:80".into(), Http1))
        );
        assert_eq!(
            backend(&e, "web", PortRef::Number(81), service),
            Ok(("web.ns:81".into(), H2c))
        );
        // A number the Service does not list, or of an unknown Service, is
        // dialed as given.
        assert_eq!(
            backend(&e, "web", PortRef::Number(8080), service),
            Ok(("web.ns:8080".into(), Http1))
        );
        assert_eq!(
            backend(&e, "gone", PortRef::Number(80), service),
            Ok(("gone.ns:80".into(), Http1))
        );
        assert_eq!(
            backend(&e, "web", name("admin"), service),
            Err("service ns/web has no port named admin".into())
        );
        assert_eq!(
            backend(&e, "gone", name("http"), service),
            Err("service ns/gone not found".into())
        );
        // Known only by its EndpointSlices: a port name cannot be resolved.
        assert_eq!(
            backend(&e, "lone", name("http"), service),
            Err("service ns/lone not found".into())
        );

        // Directly to ready endpoints, round robin, pre-formatted.
        assert_eq!(
            backend(&e, "web", name("grpc"), pod(0)),
            Ok(("10.0.0.2:9001".into(), H2c))
        );
        assert_eq!(
            backend(&e, "web", name("grpc"), pod(1)),
            Ok(("[fd00::1]:9001".into(), H2c))
        );
        assert_eq!(
            backend(&e, "web", PortRef::Number(80), pod(2)),
            Ok(("10.0.0.2:9000".into(), Http1))
        );
        assert_eq!(
            backend(&e, "web", name("admin"), pod(0)),
            Err("service ns/web has no port named admin".into())
        );
        assert_eq!(
            backend(&e, "lone", name("http"), pod(7)),
            Ok(("10.0.0.9:9000".into(), Http1))
        );
        assert_eq!(
            backend(&e, "gone", PortRef::Number(80), pod(0)),
            Err("service ns/gone has no ready endpoint for port 80".into())
        );
        e.apply([slice("lone-1", "lone", &[])]);
        assert_eq!(
            backend(&e, "lone", name("http"), pod(0)),
            Err("service ns/lone has no ready endpoint for port http".into())
        );

        let snap = e.load();
        let web = snap.service("ns", "web");
        assert!(web.has_ready());
        assert!(!snap.service("ns", "lone").has_ready());
        assert!(!snap.service("ns", "gone").has_ready());
    }

    #[test]
    fn slices_and_services_come_and_go_in_any_order() {
        let e = ReadyEndpoints::default();
        e.apply([slice("web-1", "web", &["10.0.0.1"])]);
        assert!(!e.load().get("ns", "web").unwrap().has_service);
        assert_eq!(ready(&e, "web"), ["10.0.0.1:9000"]);

        e.apply([service("web"), slice("web-2", "web", &["10.0.0.2"])]);
        assert!(e.load().get("ns", "web").unwrap().has_service);
        assert_eq!(ready(&e, "web"), ["10.0.0.1:9000", "10.0.0.2:9000"]);

        // A slice moving to another Service leaves the first one.
        e.apply([slice("web-1", "api", &["10.0.0.1"])]);
        assert_eq!(ready(&e, "web"), ["10.0.0.2:9000"]);
        assert_eq!(ready(&e, "api"), ["10.0.0.1:9000"]);

        e.apply([EndpointsChange::DeleteService {
            namespace: "ns".into(),
            name: "web".into(),
        }]);
        assert!(!e.load().get("ns", "web").unwrap().has_service);
        e.apply([EndpointsChange::DeleteSlice {
            namespace: "ns".into(),
            name: "web-2".into(),
        }]);
        assert!(e.load().get("ns", "web").is_none());

        // A relist of slices keeps the Services and drops every old slice.
        e.apply([service("api"), EndpointsChange::ResetSlices(Vec::new())]);
        assert!(!e.load().has_ready("ns", "api"));
        assert!(e.load().get("ns", "api").unwrap().has_service);
        assert_eq!(e.load().len(), 1);
    }

    /// A watched slice whose `kubernetes.io/service-name` label is removed
    /// belongs to no Service any more: its addresses must not stay ready for
    /// the one it had (they could belong to another app's pods next).
    #[test]
    fn a_slice_that_loses_its_service_label_leaves_its_service() {
        let k8s_slice = |labels: Option<(&str, &str)>| {
            let labels = labels.map(|(k, v)| [(k.to_string(), v.to_string())].into());
            EndpointsChange::ApplySlice(Box::new(EndpointSlice {
                metadata: ObjectMeta {
                    name: Some("web-1".into()),
                    namespace: Some("ns".into()),
                    labels,
                    ..Default::default()
                },
                address_type: "IPv4".into(),
                endpoints: vec![Endpoint {
                    addresses: vec!["10.0.0.1".into()],
                    ..Default::default()
                }],
                ports: Some(vec![EndpointPort {
                    name: Some("http".into()),
                    port: Some(9000),
                    ..Default::default()
                }]),
            }))
        };
        let e = ReadyEndpoints::default();
        e.apply([service("web"), k8s_slice(Some((SERVICE_NAME_LABEL, "web")))]);
        assert_eq!(ready(&e, "web"), ["10.0.0.1:9000"]);
        e.apply([k8s_slice(None)]);
        assert_eq!(ready(&e, "web"), Vec::<String>::new());
    }
}
