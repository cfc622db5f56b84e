//! The HTTP server: accept loop, routing, auth, discovery and verbs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use listwatch::{
    Body, LabelSelector, ListWatch, ListWatchQuery, Reason, ResourcePath, Store, StoreConfig,
    Stores, json_response, parse_path, status_response,
};
use parking_lot::{Mutex, RwLock};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::objects::{self, ApiError, PatchKind, Target};
use crate::registry::ResourceDef;

/// What sits in front of the [`Core`] on every connection: the product
/// serves requests as they come ([`Plain`]); a test harness counts them
/// and injects faults before handing them to [`Core::handle`].
pub trait Front: Send + Sync + 'static {
    /// The response body.
    type Body: http_body::Body<Data = Bytes, Error = Infallible> + Send + 'static;

    /// Answers one request.
    fn serve(
        &self,
        core: &Arc<Core>,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<Self::Body>> + Send;
}

/// Serves every request with [`Core::handle`] alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct Plain;

impl Front for Plain {
    type Body = Body;

    fn serve(
        &self,
        core: &Arc<Core>,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<Body>> + Send {
        core.handle(req)
    }
}

/// The kind of a request, as a harness counts or fails them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    /// GET of a collection.
    List,
    /// GET of a collection with `watch=1`.
    Watch,
    /// GET of one object.
    Get,
    /// POST.
    Create,
    /// PUT.
    Update,
    /// PATCH.
    Patch,
    /// DELETE (one object or a collection).
    Delete,
    /// Discovery, version, OpenAPI and other non-resource paths.
    Other,
}

/// What a request is: its verb and, for a resource request, its path.
/// `Err` (the message of the server's 400) when its list/watch query does
/// not parse.
pub fn classify<B>(req: &Request<B>) -> Result<(Verb, Option<ResourcePath>), String> {
    let path = req.uri().path();
    if path == TOKEN_REVIEWS && req.method() == Method::POST {
        return Ok((Verb::Create, None));
    }
    let Some(rp) = parse_path(path) else {
        return Ok((Verb::Other, None));
    };
    let query = ListWatchQuery::parse(req.uri().query())?;
    let verb = match *req.method() {
        Method::GET if rp.name.is_some() => Verb::Get,
        Method::GET if query.watch => Verb::Watch,
        Method::GET => Verb::List,
        Method::POST => Verb::Create,
        Method::PUT => Verb::Update,
        Method::PATCH => Verb::Patch,
        Method::DELETE => Verb::Delete,
        _ => Verb::Other,
    };
    Ok((verb, Some(rp)))
}

type SpawnAccept = Box<dyn Fn(Arc<Core>, TcpListener) -> JoinHandle<()> + Send + Sync>;

/// The server's state, shared by the handle, the accept loop and every
/// connection.
pub struct Core {
    pub(crate) stores: Stores,
    pub(crate) registry: RwLock<listwatch::Discovery>,
    /// Resources uninstalled on purpose: never registered by a write.
    pub(crate) absent: RwLock<std::collections::HashSet<listwatch::Gvr>>,
    /// The global resourceVersion counter; held while writing, so writes are
    /// applied in resourceVersion order across all stores.
    pub(crate) rv: Mutex<u64>,
    pub(crate) handler: ListWatch,
    pub(crate) store_config: StoreConfig,
    pub(crate) token: Option<String>,
    pub(crate) addr: SocketAddr,
    accept: Mutex<Option<JoinHandle<()>>>,
    spawn_accept: SpawnAccept,
    /// Tokens a TokenReview authenticates (`None`: TokenReviews are not served).
    pub(crate) review_tokens: Mutex<Option<std::collections::HashSet<String>>>,
    /// TokenReviews answered.
    pub(crate) reviews: AtomicU64,
    /// Bumped to drop every open connection.
    down: watch::Sender<u64>,
    /// Some object was written with owner references: garbage collection
    /// runs after every write from then on.
    owners_seen: AtomicBool,
    /// Where every write is persisted before it is answered, if anywhere.
    pub(crate) state_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").field("addr", &self.addr).finish()
    }
}

/// Maps an [`ApiError`] to its `Status` response: the one place errors become HTTP.
pub(crate) fn error_response(e: &ApiError) -> Response<Body> {
    status_response(e.reason, &e.message)
}

/// How a [`Core`] starts.
pub(crate) struct CoreConfig {
    pub(crate) registry: listwatch::Discovery,
    pub(crate) store_config: StoreConfig,
    pub(crate) handler_config: listwatch::HandlerConfig,
    pub(crate) token: Option<String>,
    pub(crate) resource_version: u64,
    /// Stores restored from a state file.
    pub(crate) stores: Vec<Store>,
    /// The state file to keep.
    pub(crate) state_file: Option<std::path::PathBuf>,
}

impl Core {
    pub(crate) async fn start<F: Front>(
        listener: TcpListener,
        config: CoreConfig,
        front: F,
    ) -> std::io::Result<Arc<Core>> {
        let addr = listener.local_addr()?;
        let front = Arc::new(front);
        let core = Arc::new(Core {
            stores: Stores::new(),
            registry: RwLock::new(config.registry),
            absent: RwLock::default(),
            rv: Mutex::new(config.resource_version),
            handler: ListWatch::new(config.handler_config),
            store_config: config.store_config,
            token: config.token,
            addr,
            accept: Mutex::new(None),
            spawn_accept: Box::new(move |core, listener| {
                tokio::spawn(accept_loop(core, listener, front.clone()))
            }),
            review_tokens: Mutex::new(None),
            reviews: AtomicU64::new(0),
            down: watch::channel(0).0,
            owners_seen: AtomicBool::new(false),
            state_file: config.state_file,
        });
        for store in config.stores {
            core.stores.insert(store);
        }
        let task = (core.spawn_accept)(core.clone(), listener);
        *core.accept.lock() = Some(task);
        Ok(core)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The store of a registered resource, created at the current global
    /// resourceVersion on first use.
    pub(crate) fn store_for(&self, def: &ResourceDef) -> Store {
        // The counter is read before the stores' lock is taken: the state
        // file's writer takes them in the other order (counter, then
        // stores), and holding both here would deadlock with it.
        let rv = *self.rv.lock();
        self.stores.get_or_insert_with(def.gvr(), || {
            Store::new(def.resource.clone(), self.store_config.clone(), rv)
        })
    }

    /// The store of a resource, if it is registered (created on first use).
    pub fn store(&self, gvr: &listwatch::Gvr) -> Option<Store> {
        self.def(gvr).map(|d| self.store_for(&d))
    }

    /// Every store in use.
    pub fn stores(&self) -> Vec<Store> {
        self.stores.all()
    }

    /// Whether the request carries the token (always, without one).
    pub fn authorized<B>(&self, req: &Request<B>) -> bool {
        self.token.as_deref().is_none_or(|t| authorized(req, t))
    }

    /// Stops listening (connections are refused) and drops every open
    /// connection, watches included. Data is kept.
    pub async fn go_down(&self) {
        let task = self.accept.lock().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        self.down.send_modify(|g| *g += 1);
    }

    /// Listens again on the same address, serving the same data.
    pub async fn come_up(this: &Arc<Core>) -> std::io::Result<()> {
        if this.accept.lock().is_some() {
            return Ok(());
        }
        let listener = process::http::listen(this.addr)?;
        let task = (this.spawn_accept)(this.clone(), listener);
        *this.accept.lock() = Some(task);
        Ok(())
    }

    pub(crate) fn shutdown(&self) {
        if let Some(task) = self.accept.lock().take() {
            task.abort();
        }
        self.down.send_modify(|g| *g += 1);
    }

    /// Writes under the global counter; then collects the garbage of
    /// owner references, once any object has an owner.
    pub(crate) fn write(
        &self,
        f: impl FnOnce(&mut u64) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let mut rv = self.rv.lock();
        let out = f(&mut rv);
        if let Ok(obj) = &out
            && crate::gc::has_owners(obj)
        {
            self.owners_seen.store(true, Ordering::Relaxed);
        }
        if self.owners_seen.load(Ordering::Relaxed) {
            crate::gc::collect(self, &mut rv);
        }
        if out.is_ok()
            && let Some(path) = &self.state_file
            && let Err(e) = crate::state::save(self, *rv, path)
        {
            tracing::error!(path = %path.display(), error = %e, "cannot write the state file; this write is kept in memory only");
        }
        out
    }

    pub(crate) fn def(&self, gvr: &listwatch::Gvr) -> Option<ResourceDef> {
        self.registry.read().get(gvr).cloned()
    }

    /// Answers one request: auth, discovery, TokenReviews and the verbs.
    pub async fn handle(self: &Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        if let Some(token) = &self.token
            && !authorized(&req, token)
        {
            return status_response(Reason::Unauthorized, "Unauthorized");
        }
        match classify(&req) {
            Err(e) => status_response(Reason::BadRequest, &e),
            Ok((verb, Some(rp))) => resource_request(self, req, rp, verb).await,
            Ok((Verb::Create, None)) => token_review(self, req).await,
            Ok((_, None)) if req.method() == Method::GET => discovery(self, req.uri().path()),
            Ok((_, None)) => status_response(
                Reason::MethodNotAllowed,
                &format!("{} is not supported on {}", req.method(), req.uri().path()),
            ),
        }
    }
}

async fn accept_loop<F: Front>(core: Arc<Core>, listener: TcpListener, front: Arc<F>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let core = core.clone();
        let front = front.clone();
        let mut down = core.down.subscribe();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let core = core.clone();
                let front = front.clone();
                async move { Ok::<_, Infallible>(front.serve(&core, req).await) }
            });
            // HTTP/1.1, and HTTP/2 with prior knowledge (h2c), as the cache
            // serves: clients built for a cache URL speak HTTP/2.
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                },
                _ = down.changed() => {}
            }
        });
    }
}

fn authorized<B>(req: &Request<B>, token: &str) -> bool {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == token)
}

fn not_found_resource() -> Response<Body> {
    status_response(
        Reason::NotFound,
        "the server could not find the requested resource",
    )
}

async fn read_body(req: Request<Incoming>) -> Result<Value, ApiError> {
    let yaml = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("yaml"));
    let bytes: Bytes = req
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::new(Reason::BadRequest, format!("reading body: {e}")))?
        .to_bytes();
    let parsed = if yaml {
        std::str::from_utf8(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|text| api::yaml::from_str::<Value>(text).map_err(|e| e.to_string()))
    } else {
        serde_json::from_slice::<Value>(&bytes).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| ApiError::new(Reason::BadRequest, format!("unable to decode body: {e}")))
}

fn patch_kind(req: &Request<Incoming>) -> Result<PatchKind, ApiError> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ct = ct.split(';').next().unwrap_or("").trim();
    match ct {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            Ok(PatchKind::Merge)
        }
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(PatchKind::Apply),
        other => Err(ApiError::new(
            Reason::UnsupportedMediaType,
            format!(
                "the body of the request was in an unknown format: {other} (supported: merge-patch+json, strategic-merge-patch+json, apply-patch+yaml)"
            ),
        )),
    }
}

/// The `fieldManager` query parameter.
fn field_manager(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let v = kv.strip_prefix("fieldManager=")?;
        percent_encoding::percent_decode_str(v)
            .decode_utf8()
            .ok()
            .map(|v| v.into_owned())
    })
}

fn object_response(status: StatusCode, v: &Value) -> Response<Body> {
    json_response(
        status,
        Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
    )
}

async fn resource_request(
    shared: &Arc<Core>,
    req: Request<Incoming>,
    rp: ResourcePath,
    verb: Verb,
) -> Response<Body> {
    let mut def = shared.def(&rp.gvr);
    let ns = rp.namespace.clone().unwrap_or_default();
    let uri_query = req.uri().query().map(str::to_owned);
    let headers = req.headers().clone();
    let target = match rp.subresource.as_deref() {
        None => Target::Main,
        Some("status") if def.as_ref().is_some_and(|d| d.status_subresource) => Target::Status,
        Some(_) => return not_found_resource(),
    };
    let is_write = matches!(verb, Verb::Create | Verb::Update | Verb::Patch);
    let body = if is_write {
        let kind = if verb == Verb::Patch {
            match patch_kind(&req) {
                Ok(k) => Some(k),
                Err(e) => return error_response(&e),
            }
        } else {
            None
        };
        match read_body(req).await {
            Ok(v) => Some((v, kind)),
            Err(e) => return error_response(&e),
        }
    } else {
        None
    };

    // Storage is generic: a write to an unknown resource registers it,
    // taking the kind from the body and the scope from the path.
    if def.is_none()
        && !shared.absent.read().contains(&rp.gvr)
        && let Some((v, _)) = &body
        && target == Target::Main
        && let Some(kind) = v.get("kind").and_then(Value::as_str)
    {
        let d = ResourceDef::new(
            &rp.gvr.group,
            &rp.gvr.version,
            &rp.gvr.resource,
            kind,
            rp.namespace.is_some(),
        );
        shared.registry.write().register(d.clone());
        def = Some(d);
    }
    let Some(def) = def else {
        return not_found_resource();
    };
    let store = shared.store_for(&def);
    let scope_ns = if def.resource.namespaced {
        rp.namespace.as_deref()
    } else {
        None
    };

    let result = match (verb, rp.name.as_deref(), body) {
        (Verb::List | Verb::Watch, None, _) => {
            if target != Target::Main {
                return not_found_resource();
            }
            return shared
                .handler
                .list_or_watch(&store, scope_ns, uri_query.as_deref(), &headers)
                .await;
        }
        (Verb::Get, Some(name), _) => {
            return shared.handler.get(&store, scope_ns.unwrap_or(""), name);
        }
        (Verb::Create, None, Some((v, _))) => shared
            .write(|rv| objects::create(&store, &def, &ns, v, rv))
            .map(|o| (StatusCode::CREATED, o)),
        (Verb::Update, Some(name), Some((v, _))) => shared
            .write(|rv| objects::update(&store, &def, &ns, name, v, target, rv))
            .map(|o| (StatusCode::OK, o)),
        (Verb::Patch, Some(name), Some((v, Some(kind)))) => {
            let created = store.get(scope_ns.unwrap_or(""), name).is_none();
            shared
                .write(|rv| {
                    let manager = field_manager(uri_query.as_deref());
                    objects::patch(
                        &store,
                        &def,
                        &ns,
                        name,
                        v,
                        kind,
                        manager.as_deref(),
                        target,
                        rv,
                    )
                })
                .map(|o| {
                    let code = if created {
                        StatusCode::CREATED
                    } else {
                        StatusCode::OK
                    };
                    (code, o)
                })
        }
        (Verb::Delete, Some(name), _) => shared
            .write(|rv| objects::delete(&store, &def, &ns, name, rv))
            .map(|o| (StatusCode::OK, o)),
        (Verb::Delete, None, _) => {
            return delete_collection(shared, &store, &def, scope_ns, uri_query.as_deref());
        }
        _ => {
            return status_response(
                Reason::MethodNotAllowed,
                "the server does not allow this method on the requested resource",
            );
        }
    };
    match result {
        Ok((code, obj)) => object_response(code, &obj),
        Err(e) => error_response(&e),
    }
}

fn delete_collection(
    shared: &Core,
    store: &Store,
    def: &ResourceDef,
    namespace: Option<&str>,
    query: Option<&str>,
) -> Response<Body> {
    let q = ListWatchQuery::parse(query).unwrap_or_default();
    let selector = match LabelSelector::parse(q.label_selector.as_deref().unwrap_or("")) {
        Ok(s) => s,
        Err(e) => return status_response(Reason::BadRequest, &e.to_string()),
    };
    let mut deleted = Vec::new();
    for o in store.snapshot().iter() {
        if namespace.is_some_and(|ns| ns != o.namespace()) || !selector.matches(o.labels()) {
            continue;
        }
        if let Ok(v) = shared.write(|rv| objects::delete(store, def, o.namespace(), o.name(), rv)) {
            deleted.push(v);
        }
    }
    let list = json!({
        "apiVersion": def.resource.api_version(),
        "kind": format!("{}List", def.resource.kind),
        "metadata": {"resourceVersion": store.resource_version().to_string()},
        "items": deleted,
    });
    object_response(StatusCode::OK, &list)
}

fn discovery(shared: &Core, path: &str) -> Response<Body> {
    if matches!(path, "/healthz" | "/livez" | "/readyz") {
        return Response::new(Body::full(Bytes::from_static(b"ok")));
    }
    let doc = shared
        .registry
        .read()
        .document(path, &shared.addr.to_string());
    match doc {
        Some(v) => object_response(StatusCode::OK, &v),
        None => not_found_resource(),
    }
}

const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

/// `POST .../tokenreviews`: authenticates `spec.token` against the tokens
/// set with `ApiServer::serve_token_reviews` (201 with `status.authenticated`),
/// as the API server does for a caller allowed to create TokenReviews.
async fn token_review(shared: &Core, req: Request<Incoming>) -> Response<Body> {
    let Some(known) = shared.review_tokens.lock().clone() else {
        return status_response(Reason::NotFound, "tokenreviews are not served");
    };
    let body = match read_body(req).await {
        Ok(v) => v,
        Err(_) => return status_response(Reason::BadRequest, "a TokenReview is expected"),
    };
    let Some(token) = body.pointer("/spec/token").and_then(Value::as_str) else {
        return status_response(Reason::BadRequest, "spec.token is required");
    };
    shared.reviews.fetch_add(1, Ordering::Relaxed);
    let authenticated = known.contains(token);
    let mut status = json!({"authenticated": authenticated});
    if authenticated {
        status["user"] = json!({"username": "system:serviceaccount:test:replica"});
    }
    let out = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token},
        "status": status,
    });
    json_response(StatusCode::CREATED, Bytes::from(out.to_string()))
}
