//! The Service + EndpointSlice ready-cache: which Service ports exist (with
//! their names and `appProtocol`) and which endpoint addresses are ready, per
//! Service and port, plus an event-driven wait for "this Service has a ready
//! endpoint" (the interceptor's cold-start hold).
//!
//! One writer (the sync machinery, from Kubernetes watches or a routes
//! directory) updates it; readers load an immutable snapshot with one atomic
//! operation. Waiters are woken per Service, so one Service turning ready
//! does not wake requests held for another.

use std::collections::HashMap;
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

#[derive(Clone, Debug, Default)]
struct SliceInfo {
    service: String,
    /// (port name, port number) of the slice.
    ports: Vec<(String, u16)>,
    ready: Vec<IpAddr>,
}

/// What is known of one Service, precomputed for the request path.
#[derive(Debug, Default)]
pub struct ServiceEntry {
    /// The Service's ports (empty when only EndpointSlices are known).
    pub ports: Vec<ServicePortInfo>,
    /// Whether the Service object itself is known.
    pub has_service: bool,
    /// Ready endpoint addresses per endpoint port name.
    ready_by_port: Vec<(String, Arc<[SocketAddr]>)>,
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
            .find(|(n, _)| n == name)
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
    services: imbl::HashMap<String, imbl::HashMap<String, Arc<ServiceEntry>>>,
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
                h2c: p.app_protocol.as_deref() == Some("kubernetes.io/h2c"),
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

#[derive(Debug, Default)]
struct WriterState {
    services: HashMap<(String, String), Vec<ServicePortInfo>>,
    /// Slices by (namespace, service), then by slice name.
    slices: HashMap<(String, String), HashMap<String, SliceInfo>>,
    /// (namespace, slice name) -> service, to find a slice on delete.
    slice_owner: HashMap<(String, String), String>,
}

impl WriterState {
    fn insert_slice(&mut self, key: (String, String), info: SliceInfo) -> Option<String> {
        let old = self.remove_slice(&key);
        self.slice_owner.insert(key.clone(), info.service.clone());
        self.slices
            .entry((key.0, info.service.clone()))
            .or_default()
            .insert(key.1, info);
        old
    }

    /// Removes a slice, returning the service it belonged to.
    fn remove_slice(&mut self, key: &(String, String)) -> Option<String> {
        let service = self.slice_owner.remove(key)?;
        let svc_key = (key.0.clone(), service.clone());
        if let Some(m) = self.slices.get_mut(&svc_key) {
            m.remove(&key.1);
            if m.is_empty() {
                self.slices.remove(&svc_key);
            }
        }
        Some(service)
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
        let mut touched: Vec<(String, String)> = Vec::new();
        let mut full = false;
        for change in changes {
            match change {
                EndpointsChange::ApplyService(svc) => {
                    if let Some(key) = service_key(&svc) {
                        writer.services.insert(key.clone(), service_ports(&svc));
                        touched.push(key);
                    }
                }
                EndpointsChange::DeleteService { namespace, name } => {
                    let key = (namespace, name);
                    writer.services.remove(&key);
                    touched.push(key);
                }
                EndpointsChange::ResetServices(list) => {
                    writer.services = list
                        .iter()
                        .filter_map(|s| Some((service_key(s)?, service_ports(s))))
                        .collect();
                    full = true;
                }
                EndpointsChange::ApplySlice(slice) => {
                    if let Some((key, info)) = slice_info(&slice) {
                        touched.push((key.0.clone(), info.service.clone()));
                        if let Some(old) = writer.insert_slice(key.clone(), info) {
                            touched.push((key.0, old));
                        }
                    }
                }
                EndpointsChange::DeleteSlice { namespace, name } => {
                    if let Some(old) = writer.remove_slice(&(namespace.clone(), name)) {
                        touched.push((namespace, old));
                    }
                }
                EndpointsChange::ResetSlices(list) => {
                    writer.slices.clear();
                    writer.slice_owner.clear();
                    for (key, info) in list.iter().filter_map(slice_info) {
                        writer.insert_slice(key, info);
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
        let keys: Vec<(String, String)> = if full {
            let mut all: Vec<_> = writer.services.keys().cloned().collect();
            all.extend(writer.slices.keys().cloned());
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
        drop(writer);
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        for key in became_ready {
            if let Some(n) = waiters.get(&key) {
                n.notify_waiters();
            }
        }
        // Forget wake-ups nobody holds any more.
        waiters.retain(|_, n| Arc::strong_count(n) > 1);
    }
}

fn dedup(mut keys: Vec<(String, String)>) -> Vec<(String, String)> {
    keys.sort();
    keys.dedup();
    keys
}

fn build_entry(writer: &WriterState, key: &(String, String)) -> Option<ServiceEntry> {
    let ports = writer.services.get(key);
    let mut by_port: HashMap<String, Vec<SocketAddr>> = HashMap::new();
    let mut ready_count = 0;
    let mut any_slice = false;
    for slice in writer.slices.get(key).into_iter().flat_map(HashMap::values) {
        any_slice = true;
        ready_count += slice.ready.len();
        for (name, port) in &slice.ports {
            let addrs = by_port.entry(name.clone()).or_default();
            addrs.extend(slice.ready.iter().map(|ip| SocketAddr::new(*ip, *port)));
        }
    }
    if ports.is_none() && !any_slice {
        return None;
    }
    let mut ready_by_port: Vec<(String, Arc<[SocketAddr]>)> = by_port
        .into_iter()
        .map(|(name, mut addrs)| {
            addrs.sort();
            addrs.dedup();
            (name, Arc::from(addrs))
        })
        .collect();
    ready_by_port.sort_by(|a, b| a.0.cmp(&b.0));
    Some(ServiceEntry {
        ports: ports.cloned().unwrap_or_default(),
        has_service: ports.is_some(),
        ready_by_port,
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

fn slice_info(slice: &EndpointSlice) -> Option<((String, String), SliceInfo)> {
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
    Some((
        (namespace, name),
        SliceInfo {
            service,
            ports,
            ready,
        },
    ))
}
