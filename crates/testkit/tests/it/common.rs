//! Helpers shared by the integration tests.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher::{self, Event};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use testkit::TestApi;
use testkit::fixtures::Hso;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound for any awaited condition; a failing test fails, never hangs.
pub const WAIT: Duration = Duration::from_secs(20);

pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// Polls `cond` every 10 ms until true (bounded by [`WAIT`]).
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

pub fn hso_api(api: &TestApi) -> Api<DynamicObject> {
    Api::namespaced_with(
        api.client(),
        "default",
        &testkit::httpscaledobject_resource(),
    )
}

pub fn hso(name: &str, host: &str) -> DynamicObject {
    Hso::new("default", name)
        .host(host)
        .spec("replicas", json!({"min": 0, "max": 10}))
        .parse()
}

pub type EventStream<K> = Pin<Box<dyn Stream<Item = Result<Event<K>, watcher::Error>> + Send>>;

/// A kube-rs `watcher` with the errors it reported kept aside.
pub struct Watch<K> {
    stream: EventStream<K>,
    pub errors: Vec<String>,
}

/// The HTTP code of a watcher error, if it carries one.
pub fn error_code(e: &watcher::Error) -> Option<u16> {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    }
}

impl<K> Watch<K>
where
    K: Resource + Clone + Debug + Send + serde::de::DeserializeOwned + 'static,
{
    pub fn new(api: Api<K>, config: watcher::Config) -> Self {
        Watch {
            stream: watcher::watcher(api, config).boxed(),
            errors: Vec::new(),
        }
    }

    /// The next event; errors are recorded (with their code) and, like a
    /// client backoff, followed by a short pause.
    pub async fn next(&mut self) -> Event<K> {
        within("a watcher event", async {
            loop {
                match self.stream.next().await {
                    Some(Ok(e)) => return e,
                    Some(Err(e)) => {
                        let code = error_code(&e);
                        self.errors.push(format!("{code:?} {e}"));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    None => panic!("watcher stream ended"),
                }
            }
        })
        .await
    }

    /// Skips to the next `Init`, then returns the names of the objects up to `InitDone`.
    pub async fn initial(&mut self) -> Vec<String> {
        loop {
            if let Event::Init = self.next().await {
                break;
            }
        }
        let mut names = Vec::new();
        loop {
            match self.next().await {
                Event::InitApply(o) => names.push(o.name_any()),
                Event::InitDone => return names,
                other => panic!("unexpected {other:?} during the initial list"),
            }
        }
    }

    /// The next `Apply` or `Delete` (fails on a relist).
    pub async fn change(&mut self) -> Event<K> {
        match self.next().await {
            e @ (Event::Apply(_) | Event::Delete(_)) => e,
            other => panic!("expected Apply or Delete, got {other:?}"),
        }
    }

    /// Waits for an `Apply` of `name` matching `pred`, skipping other changes.
    pub async fn applied(&mut self, name: &str, pred: impl Fn(&K) -> bool) -> K {
        loop {
            if let Event::Apply(o) = self.next().await
                && o.name_any() == name
                && pred(&o)
            {
                return o;
            }
        }
    }

    /// Whether an error with this code was reported.
    pub fn saw_code(&self, code: u16) -> bool {
        self.errors
            .iter()
            .any(|e| e.starts_with(&format!("Some({code})")))
    }
}

/// A raw HTTP/1.1 GET; returns status, headers (lower-case names) and body.
/// Only for non-chunked responses (lists, errors).
pub async fn raw_get(
    api: &TestApi,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    raw(api, "GET", path, headers, b"").await
}

/// A raw HTTP/1.1 request with a body.
pub async fn raw(
    api: &TestApi,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(api.addr()).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        api.addr(),
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut buf = Vec::new();
    within("a raw response", s.read_to_end(&mut buf))
        .await
        .unwrap();
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let body = buf[split + 4..].to_vec();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body)
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A raw watch connection: sends the request and returns the socket.
pub async fn raw_watch(api: &TestApi, path_and_query: &str) -> TcpStream {
    let mut s = TcpStream::connect(api.addr()).await.unwrap();
    let req = format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {}\r\n\r\n",
        api.addr()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

pub fn configmap(name: &str, data: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"},
        "data": data,
    })
}
