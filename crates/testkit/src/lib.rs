//! A writable, Kubernetes-compatible API server for tests and benchmarks.
//!
//! [`TestApi::start`] serves on `127.0.0.1:<ephemeral>`. Data enters through
//! the Kubernetes API (kube-rs `Api<T>`, `kubectl apply`, raw HTTP) or
//! [`TestApi::put_object`]; it leaves through GET, list and watch, served by
//! the [`listwatch`] crate from one versioned store per resource. Every
//! write takes the next value of one global resourceVersion counter (like
//! etcd's revision) and is stamped with `uid`, `creationTimestamp` and
//! `generation` (+1 when anything but metadata and status changes).
//!
//! Supported: discovery (`/version`, `/api`, `/api/v1`, `/apis`,
//! `/apis/<g>/<v>`; no OpenAPI, so use `kubectl --validate=false`), GET,
//! list, watch, POST (`generateName` too), PUT (409 on a stale
//! resourceVersion), PATCH (merge, strategic merge treated as merge, and
//! apply-patch as create-or-merge), DELETE (one or a collection), the
//! `/status` subresource, optional bearer-token auth, JSON or YAML bodies.
//! Storage is generic: a write to an unknown group/version/resource
//! registers it from the body's kind; discovery knows the built-ins of
//! [`builtin_resources`] plus whatever is [`register`](TestApi::register)ed.
//!
//! Auth caveat: the server speaks plain HTTP. kube-rs sends the bearer token
//! over it; kubectl (client-go) does not send credentials to non-TLS servers,
//! so with a token configured kubectl gets 401. Use kubectl without a token.
//!
//! Tests steer it with [`Faults`] (delays, dropped or stalled watch events,
//! closed watches, injected 410/429/500, going down and coming back on the
//! same port) and read [`Stats`] (requests and bytes by verb and resource,
//! open watches). [`hostile`] has the hostile clients (slowloris, silent,
//! idle) of the connection-limit tests.
//!
//! ```no_run
//! # async fn demo() {
//! use kube::api::{Api, DynamicObject, PostParams};
//! let api = testkit::TestApi::start().await;
//! let hso: Api<DynamicObject> = Api::namespaced_with(api.client(), "default", &testkit::httpscaledobject_resource());
//! # let _ = hso;
//! # }
//! ```

mod faults;
pub mod fixtures;
mod gc;
pub mod hostile;
mod objects;
mod registry;
mod server;
mod stats;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use listwatch::{Gvr, HandlerConfig, Store, StoreConfig};
use serde_json::Value;

pub use faults::{FailOn, Faults};
pub use objects::ApiError;
pub use registry::{ResourceDef, builtin_resources};
pub use stats::{CountedBody, Stats, Verb};

use objects::{PatchKind, Target};
use server::Shared;

/// kube's `ApiResource` for `http.keda.sh/v1alpha1` HTTPScaledObjects, for
/// use with `kube::api::DynamicObject`.
pub fn httpscaledobject_resource() -> kube::core::ApiResource {
    kube::core::ApiResource::erase::<api::HTTPScaledObject>(&())
}

/// Options for a [`TestApi`]; from [`TestApi::builder`].
#[derive(Debug, Clone)]
pub struct TestApiBuilder {
    addr: SocketAddr,
    token: Option<String>,
    store: StoreConfig,
    handler: HandlerConfig,
    extra: Vec<ResourceDef>,
}

impl Default for TestApiBuilder {
    fn default() -> Self {
        TestApiBuilder {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: None,
            store: StoreConfig::default(),
            handler: HandlerConfig::default(),
            extra: Vec::new(),
        }
    }
}

impl TestApiBuilder {
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

    /// Registers a resource for discovery in addition to the built-ins.
    pub fn register(mut self, def: ResourceDef) -> Self {
        self.extra.push(def);
        self
    }

    /// Starts serving.
    pub async fn start(self) -> std::io::Result<TestApi> {
        let mut registry = registry::with_builtins();
        for d in self.extra {
            registry.register(d);
        }
        let shared = Shared::start(
            self.addr,
            registry,
            self.store,
            self.handler,
            self.token.clone(),
        )
        .await?;
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            kubeconfig_yaml(&format!("http://{}", shared.addr), self.token.as_deref()),
        )?;
        Ok(TestApi {
            shared,
            kubeconfig,
            _dir: dir,
        })
    }
}

/// A kubeconfig for `server`, with a bearer token if given.
pub fn kubeconfig_yaml(server: &str, token: Option<&str>) -> String {
    let user = match token {
        Some(t) => format!("    token: {}\n", serde_json::Value::String(t.to_owned())),
        None => "    {}\n".to_owned(),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: testkit\n  cluster:\n    server: {server}\ncontexts:\n- name: testkit\n  context:\n    cluster: testkit\n    user: testkit\n    namespace: default\ncurrent-context: testkit\nusers:\n- name: testkit\n  user:\n{user}"
    )
}

/// A running test API server; stops when dropped.
pub struct TestApi {
    shared: Arc<Shared>,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApi").field("url", &self.url()).finish()
    }
}

impl Drop for TestApi {
    fn drop(&mut self) {
        self.shared.shutdown();
    }
}

impl TestApi {
    /// Starts a server with default options on `127.0.0.1:0`.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start() -> TestApi {
        TestApi::builder()
            .start()
            .await
            .expect("testkit: cannot start the test API server")
    }

    /// Options.
    pub fn builder() -> TestApiBuilder {
        TestApiBuilder::default()
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// A kubeconfig file (in a temp dir that lives as long as this handle).
    /// It carries the token if auth is on (used by kube-rs; kubectl does not
    /// send tokens over plain HTTP).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// A kube client for this server (default namespace `default`, with the
    /// token if auth is on). Needs a tokio runtime.
    pub fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(self.url().parse().expect("valid URL"));
        config.default_namespace = "default".into();
        if let Some(t) = &self.shared.token {
            config.auth_info = serde_json::from_value(serde_json::json!({ "token": t }))
                .expect("an AuthInfo with a token");
        }
        kube::Client::try_from(config).expect("testkit: kube client")
    }

    /// Serves TokenReviews (`POST /apis/authentication.k8s.io/v1/tokenreviews`),
    /// authenticating exactly `tokens`.
    pub fn serve_token_reviews(&self, tokens: impl IntoIterator<Item = impl Into<String>>) {
        *self.shared.review_tokens.lock() = Some(tokens.into_iter().map(Into::into).collect());
    }

    /// TokenReviews answered so far.
    pub fn token_reviews(&self) -> u64 {
        self.shared
            .reviews
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Fault injection.
    pub fn faults(&self) -> Faults {
        Faults {
            shared: self.shared.clone(),
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let open = self
            .shared
            .stores
            .all()
            .iter()
            .map(Store::watcher_count)
            .sum();
        self.shared.stats.snapshot(open)
    }

    /// Zeroes the request and byte counters.
    pub fn reset_stats(&self) {
        self.shared.stats.reset();
    }

    /// Registers a resource for discovery (storage needs no registration).
    pub fn register(&self, def: ResourceDef) {
        self.shared.absent.write().remove(def.gvr());
        self.shared.registry.write().register(def);
    }

    /// Removes a resource, as if its CustomResourceDefinition were not
    /// installed: its paths answer 404, writes included (a write to any
    /// other unknown resource registers it), until it is
    /// [`register`](TestApi::register)ed again.
    pub fn uninstall(&self, gvr: &Gvr) -> Option<ResourceDef> {
        self.shared.absent.write().insert(gvr.clone());
        self.shared.registry.write().unregister(gvr)
    }

    /// The store behind a resource, if it has been used.
    pub fn store(&self, gvr: &Gvr) -> Option<Store> {
        self.shared.stores.get(gvr)
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        *self.shared.rv.lock()
    }

    /// Creates or updates (merges into) an object directly, without HTTP.
    /// The resource is found by apiVersion and kind among registered ones;
    /// an unknown kind is registered with plural `<lowercase kind>s`.
    /// Namespaced objects without a namespace go to `default`.
    pub fn put_object(&self, obj: Value) -> Result<Value, ApiError> {
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if api_version.is_empty() || kind.is_empty() {
            return Err(ApiError::new(
                listwatch::Reason::Invalid,
                "object needs apiVersion and kind",
            ));
        }
        let def = self
            .shared
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
        let ns = if def.resource.namespaced {
            obj.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_owned()
        } else {
            String::new()
        };
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let store = self.shared.store_for(&def);
        self.shared.write(|rv| {
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
        let def = self.shared.def(gvr).ok_or_else(|| {
            ApiError::new(
                listwatch::Reason::NotFound,
                format!("unknown resource {gvr}"),
            )
        })?;
        let store = self.shared.store_for(&def);
        self.shared
            .write(|rv| objects::delete(&store, &def, namespace, name, rv))
    }

    /// Loads every `.yaml`, `.yml` and `.json` file in `dir` (multi-document
    /// YAML allowed) with [`put_object`](TestApi::put_object); returns how
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

/// Why [`TestApi::load_dir`] stopped.
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
