//! `/queue` over a socket: plain stays upstream's exact JSON; a client that
//! asks for the compact form in `Accept` gets every route once, then only
//! what changed, and an idle replica answers with one short line.

mod common;

use bytes::Bytes;
use common::{client, send, serve_app};
use wire::queue::{COMPACT_CONTENT_TYPE, parse_compact};

async fn compact(icp: &interceptor::Interceptor, since: Option<&str>) -> (String, String) {
    let path = match since {
        Some(s) => format!("/queue?since={s}"),
        None => "/queue".to_string(),
    };
    let got = send(
        &client(),
        icp.admin_addr,
        "GET",
        "admin",
        &path,
        &[("accept", COMPACT_CONTENT_TYPE)],
        Bytes::new(),
    )
    .await;
    assert_eq!(got.status, 200);
    let ct = got.headers["content-type"].to_str().unwrap().to_string();
    (ct, got.text())
}

#[tokio::test]
async fn plain_json_by_default_compact_deltas_on_request() {
    let (icp, _dir) = serve_app("app.test", &[]).await;
    // Plain: upstream's shape, byte for byte.
    let plain = send(
        &client(),
        icp.admin_addr,
        "GET",
        "admin",
        "/queue",
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(plain.headers["content-type"], "application/json");
    assert_eq!(
        plain.text(),
        r#"{"ns/app":{"Concurrency":0,"RequestCount":0}}"#
    );

    let (ct, first) = compact(&icp, None).await;
    assert_eq!(ct, COMPACT_CONTENT_TYPE);
    let q = parse_compact(&first).unwrap();
    assert!(q.full);
    assert_eq!(q.changed, [("ns/app", 0, 0)]);

    // Idle: the header line alone.
    let (_, idle) = compact(&icp, Some(&q.since())).await;
    assert_eq!(idle.lines().count(), 1, "{idle}");
    assert!(idle.len() < 40, "{idle}");

    // A request later: only the changed route, with its new count.
    assert_eq!(
        common::get(icp.proxy_addr, "app.test", "/x").await.status,
        200
    );
    let (_, delta) = compact(&icp, Some(&q.since())).await;
    let d = parse_compact(&delta).unwrap();
    assert!(!d.full);
    assert_eq!(d.changed, [("ns/app", 0, 1)]);
}
