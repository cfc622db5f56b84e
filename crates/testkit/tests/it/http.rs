//! Raw-HTTP behaviour: paging, ETags, slow watchers, auth.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use testkit::StartTestApi;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use testkit::TestApi;
use tokio::io::AsyncReadExt;

use crate::common::*;

#[tokio::test]
async fn paging_returns_every_object_exactly_once() {
    let api = TestApi::start().await;
    for i in 0..1000 {
        api.put_object(configmap(
            &format!("cm-{i:04}"),
            json!({"i": i.to_string()}),
        ))
        .unwrap();
    }
    let cms: Api<ConfigMap> = Api::namespaced(api.client(), "default");
    let mut seen = HashSet::new();
    let mut pages = 0;
    let mut lp = ListParams::default().limit(100);
    let mut rv = None;
    loop {
        let page = cms.list(&lp).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 100);
        rv.get_or_insert(page.metadata.resource_version.clone());
        for cm in page.items {
            assert!(seen.insert(cm.metadata.name.unwrap()), "listed twice");
        }
        // Writes between pages do not disturb the paged snapshot.
        if pages == 3 {
            api.put_object(configmap("cm-0000-new", json!({}))).unwrap();
        }
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(pages, 10);
    assert_eq!(seen.len(), 1000);
}

#[tokio::test]
async fn expired_continue_token_is_410() {
    let api = TestApi::start().await;
    for i in 0..5 {
        api.put_object(configmap(&format!("c{i}"), json!({})))
            .unwrap();
    }
    let (code, _, body) = raw_get(&api, "/api/v1/namespaces/default/configmaps?limit=2", &[]).await;
    assert_eq!(code, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    let token = v["metadata"]["continue"].as_str().unwrap().to_string();
    assert_eq!(v["metadata"]["remainingItemCount"], 3);
    // Enough writes to push the snapshot out of the kept ones.
    for i in 0..40 {
        api.put_object(configmap(&format!("c{i}"), json!({"n": i.to_string()})))
            .unwrap();
        let _ = raw_get(&api, "/api/v1/namespaces/default/configmaps?limit=1", &[]).await;
    }
    let (code, _, body) = raw_get(
        &api,
        &format!("/api/v1/namespaces/default/configmaps?limit=2&continue={token}"),
        &[],
    )
    .await;
    assert_eq!(code, 410, "{}", String::from_utf8_lossy(&body));
    let s: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(s["reason"], "Expired");
    assert_eq!(s["kind"], "Status");
}

#[tokio::test]
async fn if_none_match_gives_304_until_a_write() {
    let api = TestApi::start().await;
    api.put_object(configmap("a", json!({}))).unwrap();
    let path = "/api/v1/configmaps";
    let (code, headers, body) = raw_get(&api, path, &[]).await;
    assert_eq!(code, 200);
    let etag = header(&headers, "etag").unwrap().to_string();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        etag,
        format!("\"{}\"", v["metadata"]["resourceVersion"].as_str().unwrap())
    );
    assert_eq!(v["kind"], "ConfigMapList");
    assert_eq!(v["items"][0]["kind"], "ConfigMap");

    for tag in [etag.clone(), etag.trim_matches('"').to_string()] {
        let (code, headers, body) = raw_get(&api, path, &[("If-None-Match", &tag)]).await;
        assert_eq!(code, 304);
        assert!(body.is_empty());
        assert_eq!(header(&headers, "etag"), Some(etag.as_str()));
    }

    api.put_object(configmap("b", json!({}))).unwrap();
    let (code, headers, body) = raw_get(&api, path, &[("If-None-Match", &etag)]).await;
    assert_eq!(code, 200);
    assert_ne!(header(&headers, "etag"), Some(etag.as_str()));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
}

/// One client that never reads does not hold up 100 others, and is closed
/// once it falls behind (so its memory stays bounded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watcher_is_closed_and_does_not_delay_others() {
    let api = TestApi::builder()
        .fanout_capacity(16)
        .watch_buffer(4)
        .started()
        .await;
    api.put_object(configmap("seed", json!({}))).unwrap();
    let rv = api.resource_version();
    let path = format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}");

    // The slow one: connected, never reads a byte.
    let slow = raw_watch(&api, &path).await;
    let counts: Arc<Vec<AtomicUsize>> = Arc::new((0..100).map(|_| AtomicUsize::new(0)).collect());
    let mut readers = Vec::new();
    for i in 0..100 {
        let mut s = raw_watch(&api, &path).await;
        let counts = counts.clone();
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 1 << 16];
            let mut prev = 0u8;
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    return;
                }
                // Every event line ends with "}\n"; JSON has no raw newlines.
                let mut events = usize::from(prev == b'}' && buf[0] == b'\n');
                events += buf[..n].windows(2).filter(|w| w == b"}\n").count();
                prev = buf[n - 1];
                counts[i].fetch_add(events, Ordering::SeqCst);
            }
        }));
    }
    eventually("101 watchers", || api.stats().open_watches == 101).await;

    let payload = "x".repeat(8 * 1024);
    let mut writes = 0;
    let mut after_close = 0;
    while after_close < 5 {
        assert!(writes < 5000, "the slow watcher was never closed");
        api.put_object(configmap(
            "big",
            json!({"payload": payload, "seq": writes.to_string()}),
        ))
        .unwrap();
        writes += 1;
        // Every fast watcher gets every write, while the slow one is stuck.
        eventually("all 100 fast watchers got the write", || {
            counts.iter().all(|c| c.load(Ordering::SeqCst) >= writes)
        })
        .await;
        if api.stats().open_watches == 100 {
            after_close += 1;
        }
    }
    // Only the slow one was closed.
    assert_eq!(api.stats().open_watches, 100);
    for c in counts.iter() {
        assert_eq!(c.load(Ordering::SeqCst), writes);
    }
    drop(slow);
    for r in readers {
        r.abort();
    }
}

#[tokio::test]
async fn auth_requires_the_token() {
    let api = TestApi::builder().token("s3cret").started().await;
    let path = "/api/v1/configmaps";
    expect_status(&api, ("GET", path, &[], b"", 401, Some("Unauthorized"))).await;
    for (token, want) in [("Bearer nope", 401), ("Bearer s3cret", 200)] {
        let (code, _, _) = raw_get(&api, path, &[("Authorization", token)]).await;
        assert_eq!(code, want, "{token}");
    }

    // A kube client built from the kubeconfig carries the token.
    let kc = kube::config::Kubeconfig::read_from(api.kubeconfig_path()).unwrap();
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    cms.list(&ListParams::default()).await.unwrap();

    // Without it, 401.
    let anonymous = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(anonymous, "default");
    let err = cms.list(&ListParams::default()).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 401),
        "{err:?}"
    );
}

#[tokio::test]
async fn watch_from_a_compacted_version_is_an_error_event() {
    let api = TestApi::builder().history(2).started().await;
    api.put_object(configmap("a", json!({}))).unwrap();
    let old = api.resource_version();
    for i in 0..5 {
        api.put_object(configmap("a", json!({"i": i.to_string()})))
            .unwrap();
    }
    let (code, _, body) = raw_get(
        &api,
        &format!("/api/v1/configmaps?watch=1&resourceVersion={old}"),
        &[],
    )
    .await;
    assert_eq!(code, 200);
    let line: Value = serde_json::from_slice(body.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(line["type"], "ERROR");
    assert_eq!(line["object"]["code"], 410);
    assert_eq!(line["object"]["reason"], "Expired");
    assert!(
        line["object"]["message"]
            .as_str()
            .unwrap()
            .starts_with("too old resource version")
    );
}

/// Bad writes get the API server's Status codes.
#[tokio::test]
async fn writes_are_validated() {
    let api = TestApi::start().await;
    let base = "/apis/http.keda.sh/v1alpha1/namespaces/default/httpscaledobjects";
    let json_ct = [("Content-Type", "application/json")];

    // Rejected creates: the status code and, where given, the reason.
    let wrong_kind =
        br#"{"apiVersion":"http.keda.sh/v1alpha1","kind":"Pod","metadata":{"name":"x"}}"#;
    let wrong_version =
        br#"{"apiVersion":"http.keda.sh/v9","kind":"HTTPScaledObject","metadata":{"name":"x"}}"#;
    let no_name =
        br#"{"apiVersion":"http.keda.sh/v1alpha1","kind":"HTTPScaledObject","metadata":{}}"#;
    let rejected: [(&[u8], u16, Option<&str>); 5] = [
        (b"[1,2]", 422, Some("Invalid")),
        (b"{not json", 400, Some("BadRequest")),
        (wrong_kind, 422, Some("Invalid")),
        (wrong_version, 422, None),
        (no_name, 422, None),
    ];
    for (body, code, reason) in rejected {
        expect_status(&api, ("POST", base, &json_ct, body, code, reason)).await;
    }

    // generateName, and a YAML body.
    let yaml = b"apiVersion: http.keda.sh/v1alpha1\nkind: HTTPScaledObject\nmetadata:\n  generateName: gen-\nspec: {hosts: [a]}\n";
    let (code, _, b) = raw(
        &api,
        "POST",
        base,
        &[("Content-Type", "application/yaml")],
        yaml,
    )
    .await;
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&b));
    let created: Value = serde_json::from_slice(&b).unwrap();
    let name = created["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");

    // Refused changes to a missing object and to the created one.
    let missing = format!("{base}/missing");
    let named = format!("{base}/{name}");
    let merge = [("Content-Type", "application/merge-patch+json")];
    let json_patch = [("Content-Type", "application/json-patch+json")];
    let stale = br#"{"metadata":{"resourceVersion":"1"}}"#;
    let refused: [Write<'_>; 4] = [
        ("PATCH", &missing, &merge, b"{}", 404, Some("NotFound")),
        ("PATCH", &named, &json_patch, b"[]", 415, None),
        ("PATCH", &named, &merge, stale, 409, Some("Conflict")),
        ("DELETE", &missing, &[], b"", 404, Some("NotFound")),
    ];
    for write in refused {
        expect_status(&api, write).await;
    }
    let (code, _, b) = raw(&api, "DELETE", &named, &[], b"").await;
    assert_eq!(code, 200);
    let gone: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(gone["metadata"]["name"], name);

    // Server-side apply creates, then merges.
    let ssa = format!("{base}/ssa?fieldManager=test");
    let (code, _, _) = apply_patch(&api, &ssa, "a").await;
    assert_eq!(code, 201);
    let (code, _, b) = apply_patch(&api, &ssa, "b").await;
    assert_eq!(code, 200);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(
        (
            v["spec"]["hosts"][0].as_str(),
            v["metadata"]["generation"].as_i64()
        ),
        (Some("b"), Some(2))
    );
}

/// Manifests load from a directory (multi-document YAML, unknown kinds too),
/// and discovery then lists the new resource.
#[tokio::test]
async fn manifests_load_from_a_directory() {
    let api = TestApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c1}\ndata: {a: '1'}\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1, namespace: ns}\nspec: {size: 3}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.json"),
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"ns"}}"#,
    )
    .unwrap();
    assert_eq!(api.load_dir(dir.path()).unwrap(), 3);
    let (code, _, b) = raw_get(&api, "/api/v1/namespaces/default/configmaps/c1", &[]).await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&b));
    let (code, _, b) = raw_get(&api, "/apis/example.com/v1/namespaces/ns/widgets/w1", &[]).await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&b));
    let (_, _, b) = raw_get(&api, "/apis/example.com/v1", &[]).await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["resources"][0]["kind"], "Widget");
    let (code, _, _) = raw_get(&api, "/api/v1/namespaces/ns", &[]).await;
    assert_eq!(code, 200);
}

/// A request and its answer: method, path, headers, body, the status code
/// and, where given, the reason of the Status.
type Write<'a> = (
    &'a str,
    &'a str,
    &'a [(&'a str, &'a str)],
    &'a [u8],
    u16,
    Option<&'a str>,
);

/// Sends the request of `write` and asserts the answer it expects.
async fn expect_status(api: &TestApi, write: Write<'_>) {
    let (method, path, headers, body, code, reason) = write;
    let (got, _, b) = raw(api, method, path, headers, body).await;
    let got_reason = serde_json::from_slice::<Value>(&b)
        .ok()
        .and_then(|s| s["reason"].as_str().map(str::to_string));
    assert_eq!(
        (got, reason.and(got_reason.as_deref())),
        (code, reason),
        "{method} {path} {}",
        String::from_utf8_lossy(body)
    );
}

/// A server-side apply of the HTTPScaledObject `ssa` with one host, as YAML.
async fn apply_patch(
    api: &TestApi,
    path: &str,
    host: &str,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let yaml = format!(
        "apiVersion: http.keda.sh/v1alpha1\nkind: HTTPScaledObject\nmetadata:\n  name: ssa\nspec: {{hosts: [{host}]}}\n"
    );
    let content_type = [("Content-Type", "application/apply-patch+yaml")];
    raw(api, "PATCH", path, &content_type, yaml.as_bytes()).await
}
