//! The HTTP server: accept loop, routing, auth, discovery and verbs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use listwatch::{
    Body, LabelSelector, ListWatch, ListWatchQuery, Reason, ResourcePath, Store, StoreConfig,
    Stores, json_response, parse_path, status_json_with_code, status_response,
};
use parking_lot::{Mutex, RwLock};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::faults::FaultState;
use crate::objects::{self, ApiError, PatchKind, Target};
use crate::registry::ResourceDef;
use crate::stats::{CountedBody, StatsState, Verb};

/// State shared by the handle, the accept loop and every connection.
pub(crate) struct Shared {
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
    pub(crate) faults: Arc<FaultState>,
    pub(crate) stats: StatsState,
    pub(crate) addr: SocketAddr,
    accept: Mutex<Option<JoinHandle<()>>>,
    /// Tokens a TokenReview authenticates (`None`: TokenReviews are not served).
    pub(crate) review_tokens: Mutex<Option<std::collections::HashSet<String>>>,
    /// TokenReviews answered.
    pub(crate) reviews: std::sync::atomic::AtomicU64,
    /// Bumped to drop every open connection.
    down: watch::Sender<u64>,
    /// Some object was written with owner references: garbage collection
    /// runs after every write from then on.
    owners_seen: std::sync::atomic::AtomicBool,
}

/// Maps an [`ApiError`] to its `Status` response: the one place errors become HTTP.
pub(crate) fn error_response(e: &ApiError) -> Response<Body> {
    status_response(e.reason, &e.message)
}

impl Shared {
    pub(crate) async fn start(
        addr: SocketAddr,
        registry: listwatch::Discovery,
        store_config: StoreConfig,
        mut handler_config: listwatch::HandlerConfig,
        token: Option<String>,
    ) -> std::io::Result<Arc<Shared>> {
        let listener = process::http::listen(addr)?;
        let addr = listener.local_addr()?;
        let faults = Arc::new(FaultState::default());
        handler_config.policy = Some(faults.clone());
        let shared = Arc::new(Shared {
            stores: Stores::new(),
            registry: RwLock::new(registry),
            absent: RwLock::default(),
            rv: Mutex::new(1),
            handler: ListWatch::new(handler_config),
            store_config,
            token,
            faults,
            stats: StatsState::default(),
            addr,
            accept: Mutex::new(None),
            review_tokens: Mutex::new(None),
            reviews: std::sync::atomic::AtomicU64::new(0),
            down: watch::channel(0).0,
            owners_seen: std::sync::atomic::AtomicBool::new(false),
        });
        let task = tokio::spawn(accept_loop(shared.clone(), listener));
        *shared.accept.lock() = Some(task);
        Ok(shared)
    }

    /// The store of a registered resource, created at the current global
    /// resourceVersion on first use.
    pub(crate) fn store_for(&self, def: &ResourceDef) -> Store {
        self.stores.get_or_insert_with(def.gvr(), || {
            let rv = *self.rv.lock();
            Store::new(def.resource.clone(), self.store_config.clone(), rv)
        })
    }

    pub(crate) async fn go_down(&self) {
        let task = self.accept.lock().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        self.down.send_modify(|g| *g += 1);
    }

    pub(crate) async fn come_up(this: &Arc<Shared>) -> std::io::Result<()> {
        if this.accept.lock().is_some() {
            return Ok(());
        }
        let listener = process::http::listen(this.addr)?;
        let task = tokio::spawn(accept_loop(this.clone(), listener));
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
            self.owners_seen
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if self.owners_seen.load(std::sync::atomic::Ordering::Relaxed) {
            crate::gc::collect(self, &mut rv);
        }
        out
    }

    pub(crate) fn def(&self, gvr: &listwatch::Gvr) -> Option<ResourceDef> {
        self.registry.read().get(gvr).cloned()
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
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
        let shared = shared.clone();
        let mut down = shared.down.subscribe();
        tokio::spawn(async move {
            let svc_shared = shared.clone();
            let svc = hyper::service::service_fn(move |req| {
                let shared = svc_shared.clone();
                async move { Ok::<_, Infallible>(route(shared, req).await) }
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

fn authorized(req: &Request<Incoming>, token: &str) -> bool {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == token)
}

fn classify(method: &Method, path: &ResourcePath, query: &ListWatchQuery) -> Verb {
    match *method {
        Method::GET if path.name.is_some() => Verb::Get,
        Method::GET if query.watch => Verb::Watch,
        Method::GET => Verb::List,
        Method::POST => Verb::Create,
        Method::PUT => Verb::Update,
        Method::PATCH => Verb::Patch,
        Method::DELETE => Verb::Delete,
        _ => Verb::Other,
    }
}

async fn route(shared: Arc<Shared>, req: Request<Incoming>) -> Response<CountedBody> {
    if let Some(token) = &shared.token
        && !authorized(&req, token)
    {
        let c = shared.stats.request(Verb::Other, "");
        return CountedBody::wrap(
            status_response(Reason::Unauthorized, "Unauthorized"),
            Some(c),
        );
    }
    let path = req.uri().path().to_owned();
    if path == TOKEN_REVIEWS && req.method() == Method::POST {
        let c = shared.stats.request(Verb::Create, "");
        return CountedBody::wrap(token_review(&shared, req).await, Some(c));
    }
    let Some(rp) = parse_path(&path) else {
        let c = shared.stats.request(Verb::Other, "");
        let resp = if req.method() == Method::GET {
            discovery(&shared, &path)
        } else {
            status_response(
                Reason::MethodNotAllowed,
                &format!("{} is not supported on {path}", req.method()),
            )
        };
        return CountedBody::wrap(resp, Some(c));
    };
    let query = match ListWatchQuery::parse(req.uri().query()) {
        Ok(q) => q,
        Err(e) => return CountedBody::wrap(status_response(Reason::BadRequest, &e), None),
    };
    let verb = classify(req.method(), &rp, &query);
    let counter = shared.stats.request(verb, &rp.gvr.resource);
    let resp = resource_request(&shared, req, rp, verb).await;
    CountedBody::wrap(resp, Some(counter))
}

fn injected(code: u16, verb: Verb, store: Option<&Store>) -> Response<Body> {
    if code == 410 && verb == Verb::Watch {
        let rv = store.map(|s| s.resource_version()).unwrap_or(0);
        return listwatch::expired_watch_response(rv, rv);
    }
    let reason = Reason::from_code(code);
    let mut resp = json_response(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        status_json_with_code(code, reason, &format!("injected failure ({code})")),
    );
    if code == 429 {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
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
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    rp: ResourcePath,
    verb: Verb,
) -> Response<Body> {
    let mut def = shared.def(&rp.gvr);
    if let Some(code) = shared.faults.failure_for(verb) {
        let store = def.as_ref().map(|d| shared.store_for(d));
        return injected(code, verb, store.as_ref());
    }
    if verb == Verb::List {
        let delay = shared.faults.list_delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
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
    shared: &Shared,
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

fn discovery(shared: &Shared, path: &str) -> Response<Body> {
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

impl CountedBody {
    pub(crate) fn wrap(
        resp: Response<Body>,
        counter: Option<Arc<crate::stats::Counter>>,
    ) -> Response<CountedBody> {
        resp.map(|b| CountedBody::new(b, counter))
    }
}

const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

/// `POST .../tokenreviews`: authenticates `spec.token` against the tokens
/// set with `TestApi::serve_token_reviews` (201 with `status.authenticated`),
/// as the API server does for a caller allowed to create TokenReviews.
async fn token_review(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
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
    shared
        .reviews
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
