//! The list/watch protocol over a real socket, through `ListWatch::handle`.

#[path = "support/serve.rs"]
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use listwatch::{HandlerConfig, ResourceType, Store, StoreConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

struct Server {
    addr: SocketAddr,
    store: Store,
}

async fn serve(config: HandlerConfig) -> Server {
    let store = Store::new(
        ResourceType::new("", "v1", "configmaps", "ConfigMap", true),
        StoreConfig::default(),
        1,
    );
    let addr = support::serve(store.clone(), config).await;
    Server { addr, store }
}

fn cm(name: &str, labels: Value, data: Value) -> Value {
    json!({"metadata": {"name": name, "namespace": "ns", "labels": labels}, "data": data})
}

/// The default handler, bookmarking every `interval`.
fn bookmarks_every(interval: Duration) -> HandlerConfig {
    HandlerConfig {
        bookmark_interval: interval,
        ..HandlerConfig::default()
    }
}

impl Server {
    /// Writes the ConfigMap `ns/name` at `rv`.
    fn put(&self, name: &str, labels: Value, data: Value, rv: u64) {
        self.store.apply(cm(name, labels, data), rv).unwrap();
    }

    /// Lists every ConfigMap with the query string `query` (`?...`).
    async fn list(&self, query: &str) -> (u16, Value) {
        get(self.addr, &format!("/api/v1/configmaps{query}"), "GET").await
    }
}

async fn get(addr: SocketAddr, path: &str, method: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A watch connection decoding chunked transfer encoding into JSON lines.
struct WatchConn {
    s: TcpStream,
    buf: Vec<u8>,
    data: Vec<u8>,
    head_done: bool,
}

impl WatchConn {
    async fn open(addr: SocketAddr, path: &str) -> WatchConn {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        WatchConn {
            s,
            buf: Vec::new(),
            data: Vec::new(),
            head_done: false,
        }
    }

    /// Moves complete chunks from `buf` to `data`; true at the last chunk.
    fn decode(&mut self) -> bool {
        if !self.head_done {
            let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                return false;
            };
            let head = String::from_utf8_lossy(&self.buf[..p]).to_string();
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            self.buf.drain(..p + 4);
            self.head_done = true;
        }
        loop {
            let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") else {
                return false;
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&self.buf[..p]).unwrap(), 16).unwrap();
            if size == 0 {
                return true;
            }
            if self.buf.len() < p + 2 + size + 2 {
                return false;
            }
            self.data.extend_from_slice(&self.buf[p + 2..p + 2 + size]);
            self.buf.drain(..p + 2 + size + 2);
        }
    }

    /// The next event, or `None` when the stream ends.
    async fn next(&mut self) -> Option<Value> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(p) = self.data.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = self.data.drain(..=p).collect();
                    return Some(serde_json::from_slice(&line).unwrap());
                }
                let ended = self.decode();
                if ended && !self.data.contains(&b'\n') {
                    return None;
                }
                if self.data.contains(&b'\n') {
                    continue;
                }
                let mut tmp = [0u8; 8192];
                let n = self.s.read(&mut tmp).await.unwrap();
                if n == 0 {
                    return None;
                }
                self.buf.extend_from_slice(&tmp[..n]);
            }
        })
        .await
        .expect("a watch event in time")
    }

    /// The next non-BOOKMARK event.
    async fn next_change(&mut self) -> Value {
        loop {
            let e = self.next().await.expect("stream open");
            if e["type"] != "BOOKMARK" {
                return e;
            }
        }
    }
}

fn summary(e: &Value) -> (String, String) {
    (
        e["type"].as_str().unwrap().to_string(),
        e["object"]["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

#[tokio::test]
async fn replace_all_emits_the_difference() {
    let srv = serve(HandlerConfig::default()).await;
    srv.put("a", json!({}), json!({"v": "1"}), 2);
    srv.put("b", json!({}), json!({}), 3);
    let mut w = WatchConn::open(srv.addr, "/api/v1/configmaps?watch=1&resourceVersion=3").await;
    let relist = || {
        vec![
            cm("a", json!({}), json!({"v": "2"})),
            cm("c", json!({}), json!({})),
        ]
    };
    let summary_of = srv.store.replace_all(relist(), 10).unwrap();
    assert_eq!(
        (summary_of.added, summary_of.modified, summary_of.deleted),
        (1, 1, 1)
    );
    let mut got = vec![
        summary(&w.next_change().await),
        summary(&w.next_change().await),
        summary(&w.next_change().await),
    ];
    got.sort();
    assert_eq!(
        got,
        [
            ("ADDED".into(), "c".into()),
            ("DELETED".into(), "b".into()),
            ("MODIFIED".into(), "a".into())
        ]
    );
    // An identical relist changes nothing.
    let again = srv.store.replace_all(relist(), 10).unwrap();
    assert_eq!((again.added, again.modified, again.deleted), (0, 0, 0));
}

#[tokio::test]
async fn selectors_turn_transitions_into_added_and_deleted() {
    let srv = serve(HandlerConfig::default()).await;
    srv.put("a", json!({"app": "x"}), json!({}), 2);
    let mut w = WatchConn::open(
        srv.addr,
        "/api/v1/namespaces/ns/configmaps?watch=true&labelSelector=app%3Dx",
    )
    .await;
    assert_eq!(
        summary(&w.next_change().await),
        ("ADDED".into(), "a".into())
    );
    srv.put("a", json!({"app": "y"}), json!({}), 3);
    assert_eq!(
        summary(&w.next_change().await),
        ("DELETED".into(), "a".into())
    );
    srv.put("other", json!({"app": "y"}), json!({}), 4);
    srv.put("a", json!({"app": "x"}), json!({}), 5);
    let e = w.next_change().await;
    assert_eq!(summary(&e), ("ADDED".into(), "a".into()));
    assert_eq!(e["object"]["metadata"]["resourceVersion"], "5");
    assert_eq!(e["object"]["kind"], "ConfigMap");
    srv.store.delete("ns", "a", 6).unwrap();
    let e = w.next_change().await;
    assert_eq!(summary(&e), ("DELETED".into(), "a".into()));
    assert_eq!(e["object"]["metadata"]["resourceVersion"], "6");
}

#[tokio::test]
async fn bookmarks_carry_progress_and_streaming_lists_end_with_a_marker() {
    let srv = serve(bookmarks_every(Duration::from_millis(50))).await;
    srv.put("a", json!({}), json!({}), 2);
    let mut w = WatchConn::open(
        srv.addr,
        "/api/v1/configmaps?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&resourceVersion=0",
    )
    .await;
    assert_eq!(
        summary(&w.next().await.unwrap()),
        ("ADDED".into(), "a".into())
    );
    let end = w.next().await.unwrap();
    assert_eq!(end["type"], "BOOKMARK");
    assert_eq!(
        end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(end["object"]["metadata"]["resourceVersion"], "2");
    assert_eq!(end["object"]["kind"], "ConfigMap");

    srv.store.advance(42);
    loop {
        let e = w.next().await.unwrap();
        assert_eq!(e["type"], "BOOKMARK");
        if e["object"]["metadata"]["resourceVersion"] == "42" {
            break;
        }
    }
}

#[tokio::test]
async fn timeout_seconds_ends_the_stream_cleanly() {
    let srv = serve(HandlerConfig::default()).await;
    let mut w = WatchConn::open(srv.addr, "/api/v1/configmaps?watch=1&timeoutSeconds=1").await;
    assert!(w.next().await.is_none());
    assert_eq!(srv.store.watcher_count(), 0);
}

#[tokio::test]
async fn resource_version_semantics_of_lists() {
    let config = HandlerConfig {
        too_large_wait: Duration::from_millis(100),
        ..HandlerConfig::default()
    };
    let srv = serve(config).await;
    srv.put("a", json!({}), json!({}), 5);
    let exact_5 = "?resourceVersion=5&resourceVersionMatch=Exact";
    let (code, v) = srv
        .list("?resourceVersion=99&resourceVersionMatch=NotOlderThan")
        .await;
    assert_eq!(code, 504, "{v}");
    assert_eq!(v["kind"], "Status");
    let (code, v) = srv.list(exact_5).await;
    assert_eq!(
        (code, v["metadata"]["resourceVersion"].as_str()),
        (200, Some("5"))
    );
    // Once the store is past it, an exact version is gone.
    srv.put("b", json!({}), json!({}), 6);
    let (code, v) = srv.list(exact_5).await;
    assert_eq!(code, 410, "{v}");
    assert_eq!(v["reason"], "Expired");
    let (code, v) = srv.list("?resourceVersion=0").await;
    assert_eq!((code, v["items"].as_array().unwrap().len()), (200, 2));

    // A list for a version just ahead waits for it.
    let store = srv.store.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        store.apply(cm("c", json!({}), json!({})), 7).unwrap();
    });
    let config_wait = srv.list("?resourceVersion=7").await;
    writer.await.unwrap();
    assert_eq!(config_wait.0, 200, "{}", config_wait.1);
}

#[tokio::test]
async fn filters_and_errors() {
    let srv = serve(HandlerConfig::default()).await;
    srv.put("a", json!({"app": "x"}), json!({}), 2);
    srv.put("b", json!({"app": "y"}), json!({}), 3);
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    // Paths under /api/v1/.
    for (path, want) in [
        ("configmaps?fieldSelector=metadata.name%3Db", vec!["b"]),
        ("configmaps?labelSelector=app%20notin%20(y)", vec!["a"]),
        ("namespaces/other/configmaps", vec![]),
    ] {
        let (_, v) = get(srv.addr, &format!("/api/v1/{path}"), "GET").await;
        assert_eq!(names(&v), want, "{path}");
    }
    let (code, v) = get(srv.addr, "/api/v1/namespaces/ns/configmaps/a", "GET").await;
    assert_eq!((code, v["metadata"]["name"].as_str()), (200, Some("a")));
    for (path, code, reason) in [
        ("namespaces/ns/configmaps/zz", 404, "NotFound"),
        ("pods", 404, "NotFound"),
        ("configmaps?fieldSelector=spec.x%3D1", 400, "BadRequest"),
    ] {
        let (got, v) = get(srv.addr, &format!("/api/v1/{path}"), "GET").await;
        assert_eq!((got, v["reason"].as_str()), (code, Some(reason)), "{path}");
    }
    let (code, v) = get(srv.addr, "/api/v1/configmaps", "DELETE").await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (405, Some("MethodNotAllowed"))
    );
}

fn digest_of(e: &Value) -> u64 {
    let d = e["object"]["metadata"]["annotations"][wire::digest::ANNOTATION]
        .as_str()
        .unwrap_or_else(|| panic!("bookmark without a digest: {e}"));
    wire::digest::parse_token(d).unwrap()
}

/// The next BOOKMARK at `rv` or later, skipping other lines.
async fn bookmark_at(w: &mut WatchConn, rv: u64) -> Value {
    loop {
        let e = w.next().await.expect("the watch goes on");
        if e["type"] == "BOOKMARK"
            && e["object"]["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|r| r >= rv)
        {
            return e;
        }
    }
}

/// Bookmarks every `interval`, pulled in to 20 ms after a write.
fn pulled_in_20ms(interval: Duration) -> HandlerConfig {
    HandlerConfig {
        burst_bookmark_delay: Some(Duration::from_millis(20)),
        ..bookmarks_every(interval)
    }
}

/// A watch of every ConfigMap from resourceVersion 2, with bookmarks.
const WATCH_ALL_FROM_2: &str =
    "/api/v1/configmaps?watch=1&resourceVersion=2&allowWatchBookmarks=true";

/// Waits until the store counts `n` watchers.
async fn watchers_registered(srv: &Server, n: usize) {
    let t = tokio::time::Instant::now() + WAIT;
    while srv.store.watcher_count() < n {
        assert!(tokio::time::Instant::now() < t, "watches never registered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The digest an event carries as a field of the event.
fn event_digest(e: &Value) -> Option<u64> {
    wire::digest::parse_token(e[wire::digest::ANNOTATION].as_str()?)
}

/// Reads the next change on `conn` and asserts its type, object name and the
/// content digest of the whole store after it.
async fn expect_change(conn: &mut WatchConn, kind: &str, name: &str, store: &[(&str, &str, &str)]) {
    let e = conn.next_change().await;
    assert_eq!(summary(&e), (kind.into(), name.into()));
    let digest = wire::digest::content_digest(store.iter().copied());
    assert_eq!(event_digest(&e), Some(digest), "{e}");
}

#[tokio::test]
async fn bookmarks_and_events_carry_the_content_digest_of_the_watched_view() {
    // A long interval: the bookmark after the write is the burst one.
    let srv = serve(pulled_in_20ms(Duration::from_secs(3600))).await;
    srv.put("a", json!({"team": "x"}), json!({}), 2);
    let mut all = WatchConn::open(srv.addr, WATCH_ALL_FROM_2).await;
    let mut team_x = WatchConn::open(
        srv.addr,
        "/api/v1/configmaps?watch=1&resourceVersion=2&allowWatchBookmarks=true&labelSelector=team%3Dx",
    )
    .await;
    // Both watches are registered once the store counts them.
    watchers_registered(&srv, 2).await;
    srv.put("b", json!({"team": "y"}), json!({}), 3);
    srv.put("a", json!({"team": "x"}), json!({"k": "v"}), 4);

    // A watch of the whole store: each event carries the digest after it.
    let (a2, a4, b3) = (("ns", "a", "2"), ("ns", "a", "4"), ("ns", "b", "3"));
    expect_change(&mut all, "ADDED", "b", &[a2, b3]).await;
    expect_change(&mut all, "MODIFIED", "a", &[a4, b3]).await;
    // A filtered watch gets plain events and a bookmark with its view's digest.
    let e = team_x.next_change().await;
    assert_eq!(summary(&e), ("MODIFIED".into(), "a".into()));
    assert_eq!(event_digest(&e), None, "only whole-store watches: {e}");
    let e = bookmark_at(&mut team_x, 4).await;
    assert_eq!(
        digest_of(&e),
        wire::digest::content_digest([("ns", "a", "4")]),
        "a filtered watch's digest covers only what it sees"
    );

    // A delete moves the digest too.
    srv.store.delete("ns", "b", 5).unwrap();
    expect_change(&mut all, "DELETED", "b", &[("ns", "a", "4")]).await;
}

#[tokio::test]
async fn an_event_with_its_digest_stands_for_the_bookmark_right_after_it() {
    // Ticks every 400 ms; a write pulls the next one in to 20 ms after it.
    let srv = serve(pulled_in_20ms(Duration::from_millis(400))).await;
    srv.put("a", json!({}), json!({}), 2);
    let mut all = WatchConn::open(srv.addr, WATCH_ALL_FROM_2).await;
    // Wait for a first bookmark: the watch is live and the clock running.
    bookmark_at(&mut all, 2).await;
    srv.put("b", json!({}), json!({}), 3);
    let e = all.next().await.expect("the event");
    let after_event = tokio::time::Instant::now();
    assert_eq!(summary(&e), ("ADDED".into(), "b".into()));
    let digest = event_digest(&e).expect("the event carries the digest");
    // The tick pulled in 20 ms after the write finds this watcher proven
    // by the event and skips it; the next line is the regular bookmark one
    // interval later (a pulled-in bookmark would come well within 200 ms).
    let e = all.next().await.expect("a bookmark");
    assert_eq!(e["type"], "BOOKMARK", "{e}");
    assert!(
        after_event.elapsed() >= Duration::from_millis(200),
        "a bookmark {:?} after an event that carried the digest",
        after_event.elapsed()
    );
    assert_eq!(digest_of(&e), digest);
}

/// Drops every live change for every watcher.
struct DropAll;

impl listwatch::WatchPolicy for DropAll {
    fn deliver(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn a_watcher_that_lost_an_event_still_gets_the_bookmark_after_it() {
    let config = HandlerConfig {
        policy: Some(std::sync::Arc::new(DropAll)),
        ..pulled_in_20ms(Duration::from_secs(3600))
    };
    let srv = serve(config).await;
    srv.put("a", json!({}), json!({}), 2);
    let mut all = WatchConn::open(srv.addr, WATCH_ALL_FROM_2).await;
    watchers_registered(&srv, 1).await;
    srv.put("b", json!({}), json!({}), 3);
    // The event is dropped; the pulled-in bookmark tells the client what
    // it should hold, so it can see what it lost.
    let e = all.next().await.expect("a bookmark");
    assert_eq!(e["type"], "BOOKMARK", "the dropped event arrived: {e}");
    assert_eq!(e["object"]["metadata"]["resourceVersion"], "3");
    assert_eq!(
        digest_of(&e),
        wire::digest::content_digest([("ns", "a", "2"), ("ns", "b", "3")])
    );
}
