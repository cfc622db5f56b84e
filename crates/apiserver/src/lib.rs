//! A writable, Kubernetes-compatible API server, in memory: the control
//! plane of `http-addon api`, for laptops and the demo, and the ground of
//! every test (`testkit` adds fault injection and counters on top).
//!
//! [`ApiServer::builder`] serves on `127.0.0.1:<port>`. Data enters through
//! the Kubernetes API (kube-rs `Api<T>`, `kubectl apply`, raw HTTP) or
//! [`ApiServer::put_object`]; it leaves through GET, list and watch, served
//! by the [`listwatch`] crate from one versioned store per resource. Every
//! write takes the next value of one global resourceVersion counter (like
//! etcd's revision) and is stamped with `uid`, `creationTimestamp` and
//! `generation` (+1 when anything but metadata and status changes).
//!
//! Supported: discovery (`/version`, `/api`, `/api/v1`, `/apis`,
//! `/apis/<g>/<v>`; no OpenAPI, so use `kubectl --validate=false`), GET,
//! list, watch, POST (`generateName` too), PUT (409 on a stale
//! resourceVersion), PATCH (merge, strategic merge treated as merge, and
//! server-side apply with field ownership per manager), DELETE (one or a
//! collection; finalizers honoured), the `/status` subresource, garbage
//! collection by owner references, TokenReviews, optional bearer-token
//! auth, JSON or YAML bodies, and an optional state file so a restart keeps
//! what was applied. Storage is generic: a write to an unknown
//! group/version/resource registers it from the body's kind; discovery
//! knows the built-ins of [`builtin_resources`] plus whatever is
//! [`register`](ApiServer::register)ed.
//!
//! Auth caveat: the server speaks plain HTTP. kube-rs sends the bearer token
//! over it; kubectl (client-go) does not send credentials to non-TLS servers,
//! so with a token configured kubectl gets 401. Use kubectl without a token.

mod cli;
mod gc;
mod objects;
mod registry;
mod server;
mod state;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use listwatch::{Gvr, HandlerConfig, Store, StoreConfig, WatchPolicy};
use serde_json::Value;

pub use cli::{ApiArgs, run};
pub use objects::ApiError;
pub use registry::{ResourceDef, builtin_resources};
pub use server::{Core, Front, Plain, Verb, classify};

use objects::{PatchKind, Target};
use server::CoreConfig;

/// kube's `ApiResource` for `http.keda.sh/v1alpha1` HTTPScaledObjects, for
/// use with `kube::api::DynamicObject`.
pub fn httpscaledobject_resource() -> kube::core::ApiResource {
    kube::core::ApiResource::erase::<api::HTTPScaledObject>(&())
}

/// Options for an [`ApiServer`]; from [`ApiServer::builder`].
#[derive(Clone)]
pub struct ApiServerBuilder {
    addr: SocketAddr,
    token: Option<String>,
    store: StoreConfig,
    handler: HandlerConfig,
    extra: Vec<ResourceDef>,
    state_file: Option<PathBuf>,
}

impl std::fmt::Debug for ApiServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServerBuilder")
            .field("addr", &self.addr)
            .field("state_file", &self.state_file)
            .finish_non_exhaustive()
    }
}

impl Default for ApiServerBuilder {
    fn default() -> Self {
        ApiServerBuilder {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: None,
            store: StoreConfig::default(),
            handler: HandlerConfig::default(),
            extra: Vec::new(),
            state_file: None,
        }
    }
}

impl ApiServerBuilder {
    /// Requires `Authorization: Bearer <token>` on every request.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Listens on this address (default `127.0.0.1:0`).
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Events kept per resource for resuming watches (default 1000).
    pub fn history(mut self, events: usize) -> Self {
        self.store.history = events;
        self
    }

    /// Per-resource fan-out ring size; a watcher further behind is closed.
    pub fn fanout_capacity(mut self, events: usize) -> Self {
        self.store.fanout_capacity = events;
        self
    }

    /// Encoded events buffered per watch connection.
    pub fn watch_buffer(mut self, events: usize) -> Self {
        self.handler.watch_buffer = events;
        self
    }

    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK (default 1 s).
    pub fn bookmark_interval(mut self, interval: Duration) -> Self {
        self.handler.bookmark_interval = interval;
        self
    }

    /// Whether BOOKMARKs carry the content digest of the watch's view
    /// (default on, as `listwatch` serves them; off behaves like
    /// kube-apiserver, whose bookmarks carry only progress).
    pub fn digest_bookmarks(mut self, on: bool) -> Self {
        self.handler.digest_bookmarks = on;
        self
    }

    /// Whether a list's `If-None-Match` can be answered `304` (default on,
    /// as `listwatch` serves them; off behaves like kube-apiserver, which
    /// sends every list whole). With `digest_bookmarks(false)` too, the
    /// server looks to a client exactly like a plain API server.
    pub fn conditional_lists(mut self, on: bool) -> Self {
        self.handler.conditional_lists = on;
        self
    }

    /// Decides, per watcher and event, whether a live watch event is sent
    /// (a test harness drops or stalls events with it).
    pub fn watch_policy(mut self, policy: Arc<dyn WatchPolicy>) -> Self {
        self.handler.policy = Some(policy);
        self
    }

    /// Registers a resource for discovery in addition to the built-ins.
    pub fn register(mut self, def: ResourceDef) -> Self {
        self.extra.push(def);
        self
    }

    /// Keeps every object in this file: loaded at start (when it exists),
    /// rewritten before each write is answered.
    /// Clients of the previous run relist (their resourceVersions are
    /// older than the restored history) and so miss nothing.
    pub fn state_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.state_file = Some(path.into());
        self
    }

    /// Starts serving every request as it comes.
    pub async fn start(self) -> std::io::Result<ApiServer> {
        self.start_with(Plain).await
    }

    /// Starts serving, each request through `front`.
    pub async fn start_with<F: Front>(self, front: F) -> std::io::Result<ApiServer> {
        let mut registry = registry::with_builtins();
        for d in self.extra {
            registry.register(d);
        }
        let restored = match &self.state_file {
            Some(path) => state::load(path)?,
            None => None,
        };
        let (resource_version, stores) = match restored {
            Some(saved) => state::restore(saved, &mut registry, &self.store)?,
            None => (1, Vec::new()),
        };
        let listener = process::http::listen(self.addr)?;
        let core = Core::start(
            listener,
            CoreConfig {
                registry,
                store_config: self.store,
                handler_config: self.handler,
                token: self.token,
                resource_version,
                stores,
                state_file: self.state_file,
            },
            front,
        )
        .await?;
        Ok(ApiServer { core })
    }
}

/// A kubeconfig for `server`, with a bearer token if given.
pub fn kubeconfig_yaml(server: &str, token: Option<&str>) -> String {
    let user = match token {
        Some(t) => format!("    token: {}\n", serde_json::Value::String(t.to_owned())),
        None => "    {}\n".to_owned(),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: http-addon\n  cluster:\n    server: {server}\ncontexts:\n- name: http-addon\n  context:\n    cluster: http-addon\n    user: http-addon\n    namespace: default\ncurrent-context: http-addon\nusers:\n- name: http-addon\n  user:\n{user}"
    )
}

/// A running API server; stops when dropped.
pub struct ApiServer {
    core: Arc<Core>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("url", &self.url())
            .finish()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.core.shutdown();
    }
}

impl ApiServer {
    /// Options.
    pub fn builder() -> ApiServerBuilder {
        ApiServerBuilder::default()
    }

    /// The server's shared state (what a [`Front`] is given).
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.core.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.core.addr
    }

    /// A kubeconfig for this server (with the token, if auth is on).
    pub fn kubeconfig(&self) -> String {
        kubeconfig_yaml(&self.url(), self.core.token.as_deref())
    }

    /// A kube client for this server (default namespace `default`, with the
    /// token if auth is on). Needs a tokio runtime.
    pub fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(self.url().parse().expect("valid URL"));
        config.default_namespace = "default".into();
        if let Some(t) = &self.core.token {
            config.auth_info = serde_json::from_value(serde_json::json!({ "token": t }))
                .expect("an AuthInfo with a token");
        }
        kube::Client::try_from(config).expect("apiserver: kube client")
    }

    /// Serves TokenReviews (`POST /apis/authentication.k8s.io/v1/tokenreviews`),
    /// authenticating exactly `tokens`.
    pub fn serve_token_reviews(&self, tokens: impl IntoIterator<Item = impl Into<String>>) {
        *self.core.review_tokens.lock() = Some(tokens.into_iter().map(Into::into).collect());
    }

    /// TokenReviews answered so far.
    pub fn token_reviews(&self) -> u64 {
        self.core.reviews.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Registers a resource for discovery (storage needs no registration).
    pub fn register(&self, def: ResourceDef) {
        self.core.absent.write().remove(def.gvr());
        self.core.registry.write().register(def);
    }

    /// Removes a resource, as if its CustomResourceDefinition were not
    /// installed: its paths answer 404, writes included (a write to any
    /// other unknown resource registers it), until it is
    /// [`register`](ApiServer::register)ed again.
    pub fn uninstall(&self, gvr: &Gvr) -> Option<ResourceDef> {
        self.core.absent.write().insert(gvr.clone());
        self.core.registry.write().unregister(gvr)
    }

    /// The store behind a resource, if it has been used.
    pub fn store(&self, gvr: &Gvr) -> Option<Store> {
        self.core.stores.get(gvr)
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        *self.core.rv.lock()
    }

    /// Creates or updates (merges into) an object directly, without HTTP.
    /// The resource is found by apiVersion and kind among registered ones;
    /// an unknown kind is registered with plural `<lowercase kind>s`.
    /// Namespaced objects without a namespace go to `default`.
    pub fn put_object(&self, obj: Value) -> Result<Value, ApiError> {
        let text = |field: &str| obj.get(field).and_then(Value::as_str).unwrap_or_default();
        let (api_version, kind) = (text("apiVersion").to_owned(), text("kind").to_owned());
        if api_version.is_empty() || kind.is_empty() {
            return Err(ApiError::new(
                listwatch::Reason::Invalid,
                "object needs apiVersion and kind",
            ));
        }
        let def = self
            .core
            .registry
            .read()
            .by_kind(&api_version, &kind)
            .cloned();
        let def = def.unwrap_or_else(|| {
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", &api_version));
            let namespaced = obj.pointer("/metadata/namespace").is_some();
            let d = ResourceDef::new(
                group,
                version,
                &format!("{}s", kind.to_lowercase()),
                &kind,
                namespaced,
            );
            self.register(d.clone());
            d
        });
        let ns = match objects::meta_str(&obj, "namespace") {
            _ if !def.resource.namespaced => String::new(),
            ns => ns.unwrap_or("default").to_owned(),
        };
        let name = objects::meta_str(&obj, "name")
            .unwrap_or_default()
            .to_owned();
        let store = self.core.store_for(&def);
        self.core.write(|rv| {
            objects::patch(
                &store,
                &def,
                &ns,
                &name,
                obj,
                PatchKind::Apply,
                None,
                Target::Main,
                rv,
            )
        })
    }

    /// Deletes an object directly, without HTTP; returns its last state.
    pub fn delete_object(&self, gvr: &Gvr, namespace: &str, name: &str) -> Result<Value, ApiError> {
        let def = self.core.def(gvr).ok_or_else(|| {
            ApiError::new(
                listwatch::Reason::NotFound,
                format!("unknown resource {gvr}"),
            )
        })?;
        let store = self.core.store_for(&def);
        self.core
            .write(|rv| objects::delete(&store, &def, namespace, name, rv))
    }

    /// Loads every `.yaml`, `.yml` and `.json` file in `dir` (multi-document
    /// YAML allowed) with [`put_object`](ApiServer::put_object); returns how
    /// many objects were loaded. Errors name the file.
    pub fn load_dir(&self, dir: &Path) -> Result<usize, LoadError> {
        let read_dir = |source| LoadError::Read {
            path: dir.to_owned(),
            source,
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(read_dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
            })
            .collect();
        paths.sort();
        let mut n = 0;
        for p in paths {
            let text = std::fs::read_to_string(&p).map_err(|source| LoadError::Read {
                path: p.clone(),
                source,
            })?;
            let docs = api::yaml::documents(&text).map_err(|source| LoadError::Parse {
                path: p.clone(),
                source,
            })?;
            for v in docs {
                self.put_object(v).map_err(|source| LoadError::Rejected {
                    path: p.clone(),
                    source,
                })?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Why [`ApiServer::load_dir`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The directory or a file cannot be read.
    #[error("{}", path.display())]
    Read {
        /// The directory or file.
        path: PathBuf,
        /// The read error.
        source: std::io::Error,
    },
    /// A file is not YAML or JSON.
    #[error("{}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: api::yaml::YamlError,
    },
    /// The server refused an object of the file.
    #[error("{}", path.display())]
    Rejected {
        /// The file.
        path: PathBuf,
        /// Why.
        source: ApiError,
    },
}
