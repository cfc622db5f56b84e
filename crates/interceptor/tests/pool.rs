//! The backend connection pool over real sockets: reuse, the per-host and
//! global idle caps (least recently used evicted), and connections the
//! backend closed while idle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use interceptor::backend::Dialer;
use interceptor::pool::{H1Pool, IdleBudget};

mod common;
use common::counting_backend as backend;

fn pool(per_host: usize, budget: &Arc<IdleBudget>) -> H1Pool<Full<Bytes>> {
    let dialer = Dialer {
        attempt_timeout: Duration::from_millis(500),
        give_up_after: Duration::from_secs(2),
    };
    H1Pool::<Full<Bytes>>::new(dialer, per_host, budget.clone())
}

/// One request through the pool, its body read to the end.
async fn get(pool: &H1Pool<Full<Bytes>>, addr: SocketAddr, path: &str) {
    let req = Request::builder()
        .uri(path)
        .header("host", "backend.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (resp, lease) = pool
        .send(&std::sync::Arc::from(addr.to_string()), req)
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"ok");
    if let Some(lease) = lease {
        lease.release();
    }
}

/// Waits until the pool holds `want` idle connections.
async fn idle_becomes(pool: &H1Pool<Full<Bytes>>, want: usize) {
    for _ in 0..200 {
        if pool.idle() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("pool has {} idle connections, wanted {want}", pool.idle());
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let (addr, accepted) = backend(false).await;
    let budget = IdleBudget::new(100);
    let pool = pool(10, &budget);
    for _ in 0..20 {
        get(&pool, addr, "/").await;
        idle_becomes(&pool, 1).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(budget.idle(), 1);
}

#[tokio::test]
async fn per_host_cap_keeps_at_most_that_many_idle() {
    let (addr, accepted) = backend(false).await;
    let budget = IdleBudget::new(100);
    let pool = pool(2, &budget);
    // Five at once need five connections; only two stay idle afterwards.
    let all: Vec<_> = (0..5)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { get(&pool, addr, "/?delay_ms=200").await })
        })
        .collect();
    for t in all {
        t.await.unwrap();
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
    idle_becomes(&pool, 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(pool.idle(), 2);
    assert_eq!(budget.idle(), 2);
}

#[tokio::test]
async fn global_cap_evicts_the_least_recently_used() {
    let mut backends = Vec::new();
    for _ in 0..4 {
        backends.push(backend(false).await);
    }
    let budget = IdleBudget::new(2);
    // Two pools (two workers) share the budget.
    let a = pool(10, &budget);
    let b = pool(10, &budget);
    for (addr, _) in &backends[..3] {
        get(&a, *addr, "/").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    idle_becomes(&a, 2).await;
    assert_eq!(budget.idle(), 2);
    // Backend 0 was the least recently used: its connection was closed, so
    // the next request to it dials again; backends 1 and 2 are reused.
    get(&a, backends[2].0, "/").await;
    get(&a, backends[1].0, "/").await;
    assert_eq!(backends[1].1.load(Ordering::SeqCst), 1);
    assert_eq!(backends[2].1.load(Ordering::SeqCst), 1);
    get(&a, backends[0].0, "/").await;
    assert_eq!(backends[0].1.load(Ordering::SeqCst), 2);
    idle_becomes(&a, 2).await;
    // The other worker's pool cannot make room in this one: with the budget
    // spent by `a`, its connection is closed instead of kept.
    get(&b, backends[3].0, "/").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(b.idle(), 0);
    assert_eq!(budget.idle(), 2);
    drop(a);
    assert_eq!(budget.idle(), 0, "a dropped pool returns its share");
}

#[tokio::test]
async fn a_connection_the_backend_closed_is_not_used_again() {
    let (addr, accepted) = backend(true).await;
    let budget = IdleBudget::new(100);
    let pool = pool(10, &budget);
    for i in 1..=5 {
        get(&pool, addr, "/").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), i);
    }
    // Nothing closed stays idle.
    idle_becomes(&pool, 0).await;
}
