//! Subscribers authenticated by a TokenReview against the upstream API
//! server (testkit serving `tokenreviews`), over real sockets: accepted
//! tokens list, unknown ones get 401, and answers are cached.

use std::time::Duration;
use testkit::StartTestApi;

use bytes::Bytes;
use cache::{Authenticator, Cache, CacheConfig};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use testkit::TestApi;

const WAIT: Duration = Duration::from_secs(15);
const PATH: &str = "/apis/http.keda.sh/v1alpha1/httpscaledobjects";

async fn get(cache: &Cache, token: Option<&str>) -> http::StatusCode {
    let stream = tokio::net::TcpStream::connect(cache.addr()).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::get(PATH).header(http::header::HOST, cache.addr().to_string());
    if let Some(t) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let resp = send
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    status
}

#[tokio::test]
async fn token_review_authenticates_and_is_cached() {
    let api = TestApi::builder().token("cache-own-token").started().await;
    api.serve_token_reviews(["replica-token"]);
    let mut registry = prometheus_client::registry::Registry::default();
    let auth = Authenticator::tokens(["static-token".to_string()])
        .with_token_review(api.client(), Duration::from_secs(60));
    let cache = Cache::start(
        api.client(),
        CacheConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..CacheConfig::default()
        },
        auth,
        &mut registry,
    )
    .await
    .expect("cache starts");
    tokio::time::timeout(WAIT, cache.wait_ready())
        .await
        .expect("cache ready");

    // A static token needs no review.
    assert_eq!(get(&cache, Some("static-token")).await, 200);
    assert_eq!(api.token_reviews(), 0);

    // A token the API server accepts lists; the answer is cached.
    for _ in 0..5 {
        assert_eq!(get(&cache, Some("replica-token")).await, 200);
    }
    assert_eq!(api.token_reviews(), 1, "one review, then the cached answer");

    // One it rejects gets 401; no token at all is 401 without asking.
    assert_eq!(get(&cache, Some("stolen-token")).await, 401);
    let after_reject = api.token_reviews();
    assert_eq!(after_reject, 2);
    assert_eq!(get(&cache, None).await, 401);
    assert_eq!(api.token_reviews(), after_reject);
}
