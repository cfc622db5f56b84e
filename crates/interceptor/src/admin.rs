//! The admin server: `/queue`, `/readyz`, `/livez`, `/metrics`,
//! `/routing-table`. `/queue` is upstream's JSON, or the compact delta form
//! ([`wire::queue`]) for a client that asks for it in `Accept`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use prometheus_client::registry::Registry;
use serde::Serialize;
use serde_json::json;

/// What the admin server reads.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The published routing table.
    pub table: Arc<sync::SharedTable>,
    /// The endpoints ready-cache.
    pub endpoints: Arc<sync::ReadyEndpoints>,
    /// Metrics to expose.
    pub registry: Arc<Registry>,
    /// Set when shutdown begins: `/readyz` turns 503.
    pub draining: Arc<AtomicBool>,
    /// The snapshots behind the compact `/queue` form.
    pub queue_history: Arc<crate::queue::QueueHistory>,
}

impl AdminState {
    /// Ready: the first complete table is published, endpoints are synced,
    /// and we are not draining.
    pub fn is_ready(&self) -> bool {
        self.table.is_ready()
            && self.endpoints.is_synced()
            && !self.draining.load(Ordering::Relaxed)
    }
}

/// Handles one admin request.
pub async fn handle(
    state: Arc<AdminState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"));
    }
    let resp = match req.uri().path() {
        "/livez" | "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if state.is_ready() {
                text(StatusCode::OK, "ok\n")
            } else if state.draining.load(Ordering::Relaxed) {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "routing table not synced yet\n",
                )
            }
        }
        "/metrics" => process::http::metrics_response(&state.registry).map(Full::new),
        "/queue" if wants_compact(&req) => {
            let since = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("since=")));
            let body = state.queue_history.compact(&state.table.load(), since);
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, wire::queue::COMPACT_CONTENT_TYPE)
                .body(Full::new(Bytes::from(body)))
                .unwrap_or_default()
        }
        "/queue" => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(queue(&state.table.load()))))
            .unwrap_or_default(),
        "/routing-table" => json_response(&routing_table_json(&state.table.load())),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(resp)
}

/// Pending-request counts per route: upstream's `/queue` JSON.
pub fn queue(table: &routing::RoutingTable) -> String {
    crate::queue::plain(table)
}

/// True when the client listed the compact form in `Accept`.
fn wants_compact(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(wire::queue::COMPACT_CONTENT_TYPE))
}

/// The table as JSON: its version and every route.
pub fn routing_table_json(table: &routing::RoutingTable) -> serde_json::Value {
    let routes: Vec<serde_json::Value> = table
        .routes()
        .map(|r| serde_json::to_value(&**r).unwrap_or_default())
        .collect();
    json!({ "version": table.version(), "routes": routes })
}

fn json_response(v: &impl Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .unwrap_or_default()
}
