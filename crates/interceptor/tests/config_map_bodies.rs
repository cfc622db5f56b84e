//! `bodyFromConfigMap`, as upstream serves it: the body of a static route or
//! a placeholder read from a ConfigMap labelled
//! `http.keda.sh/response-body: "true"` in the route's namespace, with the
//! key named or derived from the request path, the content type from the
//! key's extension unless the response sets one, and every change to the
//! ConfigMap in the next answer.

mod common;

use common::*;
use http::StatusCode;
use http::header::CONTENT_TYPE;

fn config_map(name: &str, labelled: bool, index: &str) -> String {
    let labels = if labelled {
        r#"labels: {"http.keda.sh/response-body": "true"}"#
    } else {
        "labels: {}"
    };
    format!(
        r#"---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}
  namespace: ns
  {labels}
data:
  index.html: "{index}"
  style.css: "body {{}}"
  loading.html: "please wait"
"#
    )
}

fn content_type(got: &Got) -> Option<&str> {
    got.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn static_routes_and_placeholders_answer_from_labelled_config_maps() {
    // The target is not ready: every route of this test is cold.
    let backend = echo("app").await;
    let app = service_yaml("ns", "app", "http", None, backend, false);
    let pages = config_map("pages", true, "<h1>home</h1>") + &config_map("plain", false, "x");
    let routes = [
        // Every path of site.test from `pages`, the key derived from the path.
        ir(
            "ns",
            "site",
            "app",
            r#"  rules: [{hosts: [site.test]}]
  staticRoutes:
  - rules: [{paths: [{value: /}]}]
    responseMode: Always
    response: {statusCode: 200, bodyFromConfigMap: {name: pages}}
"#,
        ),
        // A placeholder with an explicit key and headers of its own.
        ir(
            "ns",
            "cold",
            "app",
            r#"  rules: [{hosts: [cold.test]}]
  coldStart:
    placeholder:
      response: {bodyFromConfigMap: {name: pages, key: loading.html}, headers: {Refresh: "5"}}
"#,
        ),
        // The response's own Content-Type wins over the key's extension.
        ir(
            "ns",
            "typed",
            "app",
            r#"  rules: [{hosts: [typed.test]}]
  coldStart:
    placeholder:
      response: {bodyFromConfigMap: {name: pages, key: index.html}, headers: {Content-Type: text/plain}}
"#,
        ),
        ir(
            "ns",
            "no-key",
            "app",
            r#"  rules: [{hosts: [no-key.test]}]
  coldStart:
    placeholder:
      response: {bodyFromConfigMap: {name: pages, key: missing.html}}
"#,
        ),
        ir(
            "ns",
            "unlabelled",
            "app",
            r#"  rules: [{hosts: [unlabelled.test]}]
  coldStart:
    placeholder:
      response: {bodyFromConfigMap: {name: plain, key: index.html}}
"#,
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (file, text) in [
        ("svc.yaml", app),
        ("cm.yaml", pages),
        ("routes.yaml", routes.concat()),
    ] {
        write(dir.path(), file, &text);
    }
    let icp = start_dir(dir.path(), &[]).await;
    let addr = icp.proxy_addr;

    let got = get(addr, "site.test", "/").await;
    assert_eq!(
        (got.status, got.text().as_str()),
        (StatusCode::OK, "<h1>home</h1>")
    );
    assert_eq!(content_type(&got), Some("text/html; charset=utf-8"));
    let got = get(addr, "site.test", "/style.css").await;
    assert_eq!(got.text(), "body {}");
    assert_eq!(content_type(&got), Some("text/css; charset=utf-8"));
    // A derived key the ConfigMap lacks: an empty body, not an error.
    let got = get(addr, "site.test", "/favicon.ico").await;
    assert_eq!((got.status, got.body.len()), (StatusCode::OK, 0));
    assert_eq!(content_type(&got), None);

    let got = get(addr, "cold.test", "/anything").await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(got.text(), "please wait");
    assert_eq!(content_type(&got), Some("text/html; charset=utf-8"));
    assert_eq!(got.headers["refresh"], "5");
    assert_eq!(got.cold(), Some("true"));

    let got = get(addr, "typed.test", "/").await;
    assert_eq!(
        (got.text().as_str(), content_type(&got)),
        ("<h1>home</h1>", Some("text/plain"))
    );

    // An explicit key the ConfigMap lacks, and a ConfigMap without the
    // label: 500, saying which.
    let got = get(addr, "no-key.test", "/").await;
    assert_eq!(got.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        got.text()
            .contains(r#"ConfigMap ns/pages has no key "missing.html""#),
        "{}",
        got.text()
    );
    let got = get(addr, "unlabelled.test", "/").await;
    assert_eq!(got.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        got.text().contains("ConfigMap ns/plain not found")
            && got.text().contains("http.keda.sh/response-body=true"),
        "{}",
        got.text()
    );

    // A change to the ConfigMap is in the next answers; so is its label's removal.
    write(
        dir.path(),
        "cm.yaml",
        &config_map("pages", true, "<h1>new</h1>"),
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while get(addr, "site.test", "/").await.text() != "<h1>new</h1>" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new body never came"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    write(
        dir.path(),
        "cm.yaml",
        &config_map("pages", false, "<h1>new</h1>"),
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while get(addr, "site.test", "/").await.status != StatusCode::INTERNAL_SERVER_ERROR {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the unlabelled ConfigMap still serves"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    icp.stop().await;
}
