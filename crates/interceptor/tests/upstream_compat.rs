//! Behaviours where the interceptor must match upstream's (Go) one, over
//! real sockets: forwarded headers, the `Host` requirement of HTTP/1.1,
//! metrics of unrouted requests, the metrics listener switch and the TLS
//! listener's version, cipher-suite and curve settings.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Empty;
use tokio_rustls::rustls;

/// A routes directory with one catch-all route (`ns/app`, any host) to an
/// echo backend; returns the directory and the backend's address.
async fn catch_all() -> (tempfile::TempDir, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let backend = echo("app").await;
    write_app(dir.path(), "app", &[], backend, true);
    (dir, backend)
}

async fn start_catch_all(dir: &Path, extra: &[&str]) -> interceptor::Interceptor {
    start_waiting(dir, extra, &["ns/app"], &["ns/app"]).await
}

/// Every value of header `name` the echo backend received.
fn received(j: &serde_json::Value, name: &str) -> Vec<String> {
    j["headers"][name]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn forwarded_headers_are_set_unless_sent_and_forwarded_for_lines_are_joined() {
    let (dir, _backend) = catch_all().await;
    let icp = start_catch_all(dir.path(), &[]).await;

    // HTTP/1.1: X-Forwarded-Host is the Host as received (port included),
    // X-Forwarded-Proto the listener's scheme; every X-Forwarded-For line
    // is kept, in order, before the client's address.
    let forwarded = [
        ("x-forwarded-for", "10.0.0.1"),
        ("x-forwarded-for", "10.0.0.2, 10.0.0.3"),
    ];
    let got = get_with(icp.proxy_addr, "App.Test:8080", "/fwd", &forwarded).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    let j = got.json();
    assert_eq!(received(&j, "x-forwarded-host"), ["App.Test:8080"]);
    assert_eq!(received(&j, "x-forwarded-proto"), ["http"]);
    assert_eq!(
        received(&j, "x-forwarded-for"),
        ["10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"]
    );

    // The client's own X-Forwarded-Host / -Proto are kept.
    let own = [
        ("x-forwarded-host", "outer.example"),
        ("x-forwarded-proto", "https"),
    ];
    let got = get_with(icp.proxy_addr, "inner.test", "/fwd", &own).await;
    let j = got.json();
    assert_eq!(received(&j, "x-forwarded-host"), ["outer.example"]);
    assert_eq!(received(&j, "x-forwarded-proto"), ["https"]);
    assert_eq!(received(&j, "x-forwarded-for"), ["127.0.0.1"]);

    // HTTP/2 (h2c): the :authority.
    let mut h2 = h2c(icp.proxy_addr).await;
    let req = Request::builder()
        .uri("http://h2.test:1234/over-h2")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tokio::time::timeout(WAIT, h2.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let j = ok_json(resp).await;
    assert_eq!(j["path"], "/over-h2");
    assert_eq!(received(&j, "x-forwarded-host"), ["h2.test:1234"]);
    assert_eq!(received(&j, "x-forwarded-proto"), ["http"]);
    icp.stop().await;
}

#[tokio::test]
async fn http11_needs_a_host_header_and_http10_routes_with_an_empty_host() {
    let (dir, backend) = catch_all().await;
    let icp = start_catch_all(dir.path(), &[]).await;

    // HTTP/1.1 without Host: 400, as Go's net/http answers, not the catch-all.
    let r = raw_request(icp.proxy_addr, "GET /no-host HTTP/1.1\r\n\r\n").await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("missing required Host header"), "{r:?}");
    // Two Host headers are as ambiguous: 400 too.
    let r = raw_request(
        icp.proxy_addr,
        "GET /two-hosts HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("too many Host headers"), "{r:?}");

    // HTTP/1.0 without Host: routed with an empty host (the catch-all),
    // and the backend gets its own address as Host, as Go's transport sends.
    let r = raw_request(icp.proxy_addr, "GET /old HTTP/1.0\r\n\r\n").await;
    assert_eq!(r.status, 200, "{r:?}");
    let j: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(j["path"], "/old");
    assert_eq!(j["host"], backend.to_string());
    assert!(received(&j, "x-forwarded-host").is_empty(), "{j}");
    icp.stop().await;
}

#[tokio::test]
async fn unrouted_requests_are_counted_with_empty_route_labels() {
    let (dir, _backend) = catch_all().await;
    // A route for one host only, so other hosts match nothing.
    write(
        dir.path(),
        "route.yaml",
        &httpso_yaml("ns", "app", "app", &["app.test"], &[], &[]),
    );
    let icp = start_catch_all(dir.path(), &[]).await;
    let c = client();
    for _ in 0..2 {
        let got = get_on(&c, icp.proxy_addr, "nowhere.test", "/").await;
        assert_eq!(got.status, StatusCode::NOT_FOUND);
    }
    let metrics = icp.metrics_addr.expect("metrics listener");
    let text = get_on(&c, metrics, "metrics", "/metrics").await.text();
    for want in [
        r#"interceptor_request_count_total{code="404",method="GET",route_name="",route_namespace=""} 2"#,
        r#"interceptor_request_duration_seconds_count{code="404",method="GET",route_name="",route_namespace=""} 2"#,
        r#"interceptor_request_duration_seconds_bucket{le="+Inf",code="404",method="GET",route_name="",route_namespace=""} 2"#,
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
    // Unrouted requests have no concurrency series of their own.
    assert!(
        !text.contains(r#"interceptor_request_concurrency{route_name="",route_namespace=""}"#),
        "{text}"
    );
    icp.stop().await;
}

#[tokio::test]
async fn metrics_listener_can_be_turned_off() {
    let (dir, _backend) = catch_all().await;
    let icp = start_catch_all(dir.path(), &["--metrics-enabled", "false"]).await;
    assert_eq!(icp.metrics_addr, None);
    // The proxy and admin servers are unaffected.
    let got = get(icp.proxy_addr, "app.test", "/").await;
    assert_eq!(got.status, StatusCode::OK);
    icp.stop().await;
}

/// A TLS client's settings: protocol versions, and optionally only these
/// cipher suites or key-exchange groups.
struct ClientTls {
    versions: &'static [&'static rustls::SupportedProtocolVersion],
    suites: Option<Vec<rustls::SupportedCipherSuite>>,
    groups: Option<Vec<&'static dyn rustls::crypto::SupportedKxGroup>>,
}

const TLS12_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
const TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

impl ClientTls {
    fn versions(versions: &'static [&'static rustls::SupportedProtocolVersion]) -> ClientTls {
        ClientTls {
            versions,
            suites: None,
            groups: None,
        }
    }

    /// GET `/tls` over HTTP/1.1 with SNI `tls.test`: the echo's JSON, or
    /// why the handshake failed.
    async fn get(&self, addr: SocketAddr, pki: &Pki) -> Result<serde_json::Value, String> {
        let mut provider = rustls::crypto::ring::default_provider();
        if let Some(s) = &self.suites {
            provider.cipher_suites = s.clone();
        }
        if let Some(g) = &self.groups {
            provider.kx_groups = g.clone();
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca.der().clone()).unwrap();
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(self.versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("tls.test").unwrap();
        let tls = tokio::time::timeout(WAIT, connector.connect(name, tcp))
            .await
            .expect("handshake ends in time")
            .map_err(|e| e.to_string())?;
        let req = Request::builder()
            .uri("/tls")
            .header("host", "tls.test")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = h1_handshake(tls).await.send_request(req).await.unwrap();
        Ok(ok_json(resp).await)
    }
}

/// A catch-all routes directory, and a CA whose leaf for `tls.test` is the
/// TLS listener's default pair.
struct TlsSite {
    pki: Pki,
    dir: tempfile::TempDir,
    _certs: tempfile::TempDir,
    cert: String,
    key: String,
}

impl TlsSite {
    async fn new() -> TlsSite {
        let pki = Pki::new();
        let certs = tempfile::tempdir().unwrap();
        pki.write_leaf(&["tls.test"], certs.path(), "tls.crt", "tls.key");
        let path = |file: &str| certs.path().join(file).to_str().unwrap().to_string();
        let (cert, key) = (path("tls.crt"), path("tls.key"));
        let (dir, _backend) = catch_all().await;
        TlsSite {
            pki,
            dir,
            _certs: certs,
            cert,
            key,
        }
    }

    /// Flags turning TLS on with the default pair, then `extra`.
    fn flags<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut flags = tls_flags(&self.cert, &self.key);
        flags.extend_from_slice(extra);
        flags
    }

    /// An interceptor with TLS on (and `extra` flags), serving the site.
    async fn start(&self, extra: &[&str]) -> interceptor::Interceptor {
        start_catch_all(self.dir.path(), &self.flags(extra)).await
    }
}

#[tokio::test]
async fn tls_min_version_13_refuses_a_tls12_client() {
    let tls = TlsSite::new().await;
    let pki = &tls.pki;

    // Defaults: a TLS 1.2 client gets through, and the backend is told the
    // request came over https.
    let icp = tls.start(&[]).await;
    let tls_addr = icp.tls_addr.expect("TLS listener");
    let j = ClientTls::versions(TLS12_ONLY)
        .get(tls_addr, pki)
        .await
        .expect("TLS 1.2 accepted by default");
    assert_eq!(j["path"], "/tls");
    assert_eq!(received(&j, "x-forwarded-proto"), ["https"]);
    assert_eq!(received(&j, "x-forwarded-host"), ["tls.test"]);
    icp.stop().await;

    // KEDA_HTTP_PROXY_TLS_MIN_VERSION=VersionTLS13: TLS 1.2 is refused.
    let icp = tls.start(&["--tls-min-version", "VersionTLS13"]).await;
    let tls_addr = icp.tls_addr.expect("TLS listener");
    let err = ClientTls::versions(TLS12_ONLY)
        .get(tls_addr, pki)
        .await
        .expect_err("TLS 1.2 refused");
    assert!(err.to_lowercase().contains("version"), "{err}");
    ClientTls::versions(TLS13_ONLY)
        .get(tls_addr, pki)
        .await
        .expect("TLS 1.3 accepted");
    icp.stop().await;
}

#[tokio::test]
async fn tls_cipher_suites_and_curves_restrict_the_listener() {
    use rustls::crypto::ring::{cipher_suite, kx_group};
    let tls = TlsSite::new().await;
    let icp = tls
        .start(&[
            "--tls-cipher-suites",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            "--tls-curve-preferences",
            "CurveP384",
        ])
        .await;
    let tls_addr = icp.tls_addr.expect("TLS listener");

    let listed = cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384;
    let unlisted = cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256;
    let tls13 = cipher_suite::TLS13_CHACHA20_POLY1305_SHA256;
    let (p384, x25519) = (kx_group::SECP384R1, kx_group::X25519);
    for (case, versions, suite, group, accepted) in [
        // TLS 1.2: only the listed suite and curve.
        ("listed suite and curve", TLS12_ONLY, listed, p384, true),
        ("unlisted suite", TLS12_ONLY, unlisted, p384, false),
        ("unlisted curve", TLS12_ONLY, listed, x25519, false),
        // TLS 1.3 suites are not configurable in Go, so a list of TLS 1.2
        // suites leaves TLS 1.3 on its defaults; the curves still apply.
        ("TLS 1.3, default suites", TLS13_ONLY, tls13, p384, true),
    ] {
        let client = ClientTls {
            versions,
            suites: Some(vec![suite]),
            groups: Some(vec![group]),
        };
        let got = client.get(tls_addr, &tls.pki).await;
        assert_eq!(got.is_ok(), accepted, "{case}: {got:?}");
    }
    icp.stop().await;
}

#[tokio::test]
async fn bad_tls_settings_stop_the_start_naming_the_variable() {
    let tls = TlsSite::new().await;
    let routes = ["--routes-dir", tls.dir.path().to_str().unwrap()];
    for (flag, value, var, named) in [
        (
            "--tls-min-version",
            "VersionTLS11",
            "KEDA_HTTP_PROXY_TLS_MIN_VERSION",
            "VersionTLS11",
        ),
        (
            "--tls-max-version",
            "1.4",
            "KEDA_HTTP_PROXY_TLS_MAX_VERSION",
            "1.4",
        ),
        (
            "--tls-cipher-suites",
            "TLS_AES_128_GCM_SHA256,TLS_NOT_A_SUITE",
            "KEDA_HTTP_PROXY_TLS_CIPHER_SUITES",
            "TLS_NOT_A_SUITE",
        ),
        (
            "--tls-curve-preferences",
            "X25519,CurveP521",
            "KEDA_HTTP_PROXY_TLS_CURVE_PREFERENCES",
            "CurveP521",
        ),
    ] {
        let args = args(&routes, &tls.flags(&[flag, value]));
        let err = interceptor::Interceptor::start(&args)
            .await
            .expect_err("bad TLS setting refused")
            .to_string();
        assert!(err.contains(var) && err.contains(named), "{flag}: {err}");
    }
}
