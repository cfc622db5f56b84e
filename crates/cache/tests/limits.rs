//! The subscriber port under hostile clients, over real sockets: a
//! slowloris client is disconnected while a subscriber is served, past the
//! connection cap new connections are closed while the open ones keep
//! working, and an oversized request head gets 431.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use cache::{Authenticator, Cache, CacheConfig};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use testkit::TestApi;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "subscriber-token";
const WAIT: Duration = Duration::from_secs(15);
/// Generous bound on "the server closes it".
const CLOSED_WITHIN: Duration = Duration::from_secs(30);

async fn cache_with(api: &TestApi, limits: process::http::Limits) -> Cache {
    let mut registry = prometheus_client::registry::Registry::default();
    let config = CacheConfig {
        limits,
        ..CacheConfig::default()
    };
    let cache = Cache::start(
        api.client(),
        config,
        Authenticator::tokens([TOKEN.to_string()]),
        &mut registry,
    )
    .await
    .expect("cache starts");
    tokio::time::timeout(WAIT, cache.wait_ready())
        .await
        .expect("cache ready");
    cache
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// An HTTP/1.1 connection to `addr`, open and idle.
async fn open(addr: SocketAddr) -> Sender {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// A list of HTTPScaledObjects over `send`; its status.
async fn list(send: &mut Sender) -> u16 {
    let req = http::Request::get("/apis/http.keda.sh/v1alpha1/httpscaledobjects")
        .header(http::header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(WAIT, send.send_request(req))
        .await
        .expect("answered in time")
        .expect("served");
    let status = resp.status().as_u16();
    resp.into_body().collect().await.unwrap();
    status
}

/// Reads until the server closes `s`; what it sent before.
async fn until_closed(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(CLOSED_WITHIN, read)
        .await
        .expect("the server closes the connection");
    String::from_utf8_lossy(&got).into_owned()
}

async fn wait_open(cache: &Cache, want: i64) {
    let wait = async {
        while cache.metrics().connections.open.get() != want {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .unwrap_or_else(|_| panic!("never {want} open connections"));
}

#[tokio::test]
async fn slowloris_is_closed_while_a_subscriber_is_served() {
    let api = TestApi::start().await;
    let cache = cache_with(
        &api,
        process::http::Limits {
            header_read_timeout: Duration::from_secs(1),
            ..process::http::Limits::default()
        },
    )
    .await;
    let mut slow = TcpStream::connect(cache.addr()).await.unwrap();
    slow.write_all(b"GET /apis HTTP/1.1\r\nHost: cache\r\n")
        .await
        .unwrap();
    let (mut slow_read, mut slow_write) = slow.into_split();
    let trickle = tokio::spawn(async move {
        for b in b"X-Slow: ".iter().cycle() {
            if slow_write.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut subscriber = open(cache.addr()).await;
    for _ in 0..5 {
        assert_eq!(list(&mut subscriber).await, 200);
    }
    let read = async {
        let mut buf = [0u8; 256];
        while let Ok(n) = slow_read.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::time::timeout(CLOSED_WITHIN, read)
        .await
        .expect("the slowloris client is disconnected");
    trickle.abort();
    // A silent connection is closed too.
    let mut silent = TcpStream::connect(cache.addr()).await.unwrap();
    assert_eq!(until_closed(&mut silent).await, "");
    assert!(cache.metrics().connections.without_request.get() >= 1);
    cache.shutdown().await;
}

#[tokio::test]
async fn past_the_cap_new_connections_are_closed_and_open_ones_work() {
    let api = TestApi::start().await;
    let cache = cache_with(
        &api,
        process::http::Limits {
            max_connections: 2,
            ..process::http::Limits::default()
        },
    )
    .await;
    let mut a = open(cache.addr()).await;
    let mut b = open(cache.addr()).await;
    wait_open(&cache, 2).await;
    let mut c = TcpStream::connect(cache.addr()).await.unwrap();
    let _ = c
        .write_all(b"GET /livez HTTP/1.1\r\nHost: cache\r\n\r\n")
        .await;
    assert_eq!(until_closed(&mut c).await, "", "no response over the cap");
    assert_eq!(cache.metrics().connections.refused.get(), 1);
    for _ in 0..3 {
        assert_eq!(list(&mut a).await, 200);
        assert_eq!(list(&mut b).await, 200);
    }
    drop(a);
    wait_open(&cache, 1).await;
    assert_eq!(list(&mut open(cache.addr()).await).await, 200);
    cache.shutdown().await;
}

#[tokio::test]
async fn an_oversized_request_head_gets_431() {
    let api = TestApi::start().await;
    let cache = cache_with(&api, process::http::Limits::default()).await;
    let mut s = TcpStream::connect(cache.addr()).await.unwrap();
    let big = "a".repeat(process::http::Limits::DEFAULT_MAX_HEADER_BYTES + 1024);
    // The server may answer and close before the whole head is written.
    let _ = s
        .write_all(format!("GET /livez HTTP/1.1\r\nHost: cache\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .await;
    let got = until_closed(&mut s).await;
    assert!(
        got.starts_with("HTTP/1.1 431 "),
        "{}",
        got.lines().next().unwrap_or("")
    );
    cache.shutdown().await;
}
