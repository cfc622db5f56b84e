//! The Service + EndpointSlice ready-cache: which Service ports exist (with
//! their names and `appProtocol`) and which endpoint addresses are ready, per
//! Service and port, plus an event-driven wait for "this Service has a ready
//! endpoint" (the interceptor's cold-start hold).
//!
//! One writer (the sync machinery, from Kubernetes watches or a routes
//! directory) updates it; readers load an immutable snapshot with one atomic
//! operation. Waiters are woken per Service, so one Service turning ready
//! does not wake requests held for another.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use routing::PortRef;
use std::sync::Mutex;
use tokio::sync::{Notify, watch};

/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

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
type PortAddresses = (Arc<str>, Arc<[SocketAddr]>);

/// What is known of one Service, precomputed for the request path.
#[derive(Debug, Default)]
pub struct ServiceEntry {
    /// The Service's ports (empty when only EndpointSlices are known).
    pub ports: Arc<[ServicePortInfo]>,
    /// Whether the Service object itself is known.
    pub has_service: bool,
    /// Ready endpoint addresses per endpoint port name.
    ready_by_port: Box<[PortAddresses]>,
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
        match port {
            PortRef::Number(n) => self.ports.iter().find(|p| p.port == *n),
            PortRef::Name(name) => self.ports.iter().find(|p| p.name == **name),
        }
    }

    /// Ready endpoint addresses for a Service port (by the Service port's
    /// name, which is how EndpointSlice ports are named).
    pub fn ready_addresses(&self, port: &PortRef) -> Option<&Arc<[SocketAddr]>> {
        let name: &str = match (port, self.resolve(port)) {
            (_, Some(p)) => &p.name,
            (PortRef::Name(name), None) => name,
            // Without the Service object a numbered port can only match an
            // unnamed (single-port) slice.
            (PortRef::Number(_), None) => "",
        };
        self.ready_by_port
            .iter()
            .find(|(n, _)| **n == *name)
            .or_else(|| {
                // A single-port slice serves a single-port Service whatever the names.
                (self.ready_by_port.len() == 1).then(|| &self.ready_by_port[0])
            })
            .map(|(_, addrs)| addrs)
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

    /// Resolves a route's port to the Service port to dial.
    pub fn resolve(
        &self,
        namespace: &str,
        service: &str,
        port: &PortRef,
    ) -> Result<ResolvedPort, ResolveError> {
        let entry = self
            .get(namespace, service)
            .filter(|e| e.has_service)
            .ok_or_else(|| ResolveError::NoService {
                namespace: namespace.to_string(),
                service: service.to_string(),
            })?;
        match entry.resolve(port) {
            Some(p) => Ok(ResolvedPort {
                port: p.port,
                name: p.name.clone(),
                h2c: p.is_h2c(),
            }),
            None => match port {
                // A numbered port the Service does not list is still dialable
                // (upstream dials it as given).
                PortRef::Number(n) => Ok(ResolvedPort {
                    port: *n,
                    name: String::new(),
                    h2c: false,
                }),
                PortRef::Name(name) => Err(ResolveError::NoPort {
                    namespace: namespace.to_string(),
                    service: service.to_string(),
                    port: name.to_string(),
                }),
            },
        }
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
    ports: Option<Arc<[ServicePortInfo]>>,
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
        self.services.entry(key.clone()).or_default().ports = Some(Arc::from(def.ports));
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

    /// True once Services and EndpointSlices have been listed once.
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
        for change in changes {
            match change {
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
                EndpointsChange::ApplySlice(slice) => {
                    if let Some(def) = slice_def(&slice) {
                        writer.put_slice(def, &mut touched);
                    }
                }
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
    let mut ready_by_port: Vec<PortAddresses> = by_port
        .into_iter()
        .map(|(name, mut addrs)| {
            addrs.sort();
            addrs.dedup();
            (name, Arc::from(addrs))
        })
        .collect();
    ready_by_port.sort_by(|a, b| a.0.cmp(&b.0));
    Some(ServiceEntry {
        ports: ports.clone().unwrap_or_else(|| Arc::from([])),
        has_service: ports.is_some(),
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
}
