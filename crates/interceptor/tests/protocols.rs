//! HTTP/2 and h2c in, h2c to the backend, websockets, TLS with SNI.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use futures::{SinkExt, StreamExt};
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use testkit::fixtures::Hso;
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn h2c_clients_and_an_h2c_backend() {
    let dir = tempfile::tempdir().unwrap();
    let plain = echo("plain").await;
    let grpc = echo("grpc").await;
    write(
        dir.path(),
        "plain.yaml",
        &service_yaml("ns", "plain", "http", None, plain, true),
    );
    write(
        dir.path(),
        "grpc.yaml",
        &service_yaml("ns", "grpc", "grpc", Some("kubernetes.io/h2c"), grpc, true),
    );
    let routes = httpso_yaml("ns", "plain", "plain", &["plain.test"], &[], &[])
        + &Hso::new("ns", "grpc")
            .host("grpc.test")
            .service_port_name("grpc", "grpc")
            .yaml_document();
    write(dir.path(), "routes.yaml", &routes);
    let icp = start_dir(dir.path(), &[]).await;
    wait_route(&icp, "ns", "plain").await;
    wait_route(&icp, "ns", "grpc").await;
    wait_ready(&icp, "ns", "plain").await;
    wait_ready(&icp, "ns", "grpc").await;

    // An HTTP/2 (prior knowledge) client; the host comes from :authority.
    let h2 = h2_client();
    let req = Request::builder()
        .uri(format!("http://plain.test:{}/h2", icp.proxy_addr.port()))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    // Dial the proxy whatever the URI's host says.
    let stream = tokio::net::TcpStream::connect(icp.proxy_addr)
        .await
        .unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(j["server"], "plain");
    assert_eq!(j["version"], "HTTP/1.1", "HTTP/1.1 to a plain backend");
    assert_eq!(j["host"], format!("plain.test:{}", icp.proxy_addr.port()));
    drop(h2);

    // A gRPC-style request over HTTP/1.1 in, h2c out.
    let got = send_grpc_style(icp.proxy_addr).await;
    assert_eq!(got["server"], "grpc");
    assert_eq!(got["version"], "HTTP/2.0");
    assert_eq!(got["headers"]["te"][0], "trailers");
    assert_eq!(got["headers"]["content-type"][0], "application/grpc");
    icp.stop().await;
}

async fn send_grpc_style(proxy: std::net::SocketAddr) -> serde_json::Value {
    let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method("POST")
        .uri("http://grpc.test/pkg.Service/Method")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(Bytes::from_static(
            b"\0\0\0\0\x02hi",
        )))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn websocket_round_trip_is_counted_for_its_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let backend = echo("ws").await;
    write_app(dir.path(), "ws", &["ws.test"], backend, true);
    let icp = start_dir(dir.path(), &[]).await;
    wait_route(&icp, "ns", "ws").await;
    wait_ready(&icp, "ns", "ws").await;

    let stream = tokio::net::TcpStream::connect(icp.proxy_addr)
        .await
        .unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async("ws://ws.test/socket", stream)
        .await
        .expect("websocket handshake through the proxy");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for i in 0..3 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let back = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back, Message::text(format!("hello {i}")));
    }
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let back = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(back, Message::binary(vec![1u8, 2, 3]));
    // Open socket: still one request in flight.
    let q = wait_concurrency(&icp, "ns/ws", 1).await;
    assert_eq!(q["ns/ws"]["RequestCount"], 1);
    ws.close(None).await.unwrap();
    drop(ws);
    wait_concurrency(&icp, "ns/ws", 0).await;
    icp.stop().await;
}

#[tokio::test]
async fn websocket_over_http2_extended_connect() {
    let dir = tempfile::tempdir().unwrap();
    let backend = echo("ws2").await;
    write_app(dir.path(), "ws2", &["ws2.test"], backend, true);
    let icp = start_dir(dir.path(), &[]).await;
    wait_route(&icp, "ns", "ws2").await;
    wait_ready(&icp, "ns", "ws2").await;

    // h2c with prior knowledge; the proxy announces
    // SETTINGS_ENABLE_CONNECT_PROTOCOL, which the client must have seen.
    let stream = tokio::net::TcpStream::connect(icp.proxy_addr)
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut resp = None;
    for _ in 0..50 {
        let mut req = Request::builder()
            .method(http::Method::CONNECT)
            .version(Version::HTTP_2)
            .uri("http://ws2.test/socket")
            .header("sec-websocket-version", "13")
            .body(Empty::<Bytes>::new())
            .unwrap();
        req.extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        match send.send_request(req).await {
            Ok(r) => {
                resp = Some(r);
                break;
            }
            // The server's SETTINGS frame has not arrived yet.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    let mut resp = resp.expect("extended CONNECT accepted");
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "RFC 8441: 200 opens the tunnel"
    );
    assert!(resp.headers().get("upgrade").is_none());
    let upgraded = hyper::upgrade::on(&mut resp).await.expect("tunnel");
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    for i in 0..3 {
        ws.send(Message::text(format!("over h2 {i}")))
            .await
            .unwrap();
        let back = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back, Message::text(format!("over h2 {i}")));
    }
    let q = wait_concurrency(&icp, "ns/ws2", 1).await;
    assert_eq!(q["ns/ws2"]["RequestCount"], 1);
    ws.close(None).await.unwrap();
    drop(ws);
    wait_concurrency(&icp, "ns/ws2", 0).await;
    icp.stop().await;
}

#[tokio::test]
async fn tls_picks_the_certificate_by_sni_and_speaks_h2_and_http1() {
    let pki = Pki::new();
    let certs = tempfile::tempdir().unwrap();
    let (a_pem, a_key, a_der) = pki.leaf(&["a.test"]);
    let (b_pem, b_key, b_der) = pki.leaf(&["*.b.test"]);
    std::fs::write(certs.path().join("a.crt"), a_pem).unwrap();
    std::fs::write(certs.path().join("a.key"), a_key).unwrap();
    std::fs::write(certs.path().join("b.pem"), b_pem).unwrap();
    std::fs::write(certs.path().join("b-key.pem"), b_key).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let backend = echo("tls").await;
    write_app(dir.path(), "tls", &[], backend, true);
    let store = certs.path().to_str().unwrap();
    let icp = start_dir(
        dir.path(),
        &[
            "--tls-enabled",
            "true",
            "--tls-port",
            "0",
            "--tls-cert-path",
            "/nonexistent/tls.crt",
            "--tls-key-path",
            "/nonexistent/tls.key",
            "--tls-cert-store-paths",
            store,
        ],
    )
    .await;
    wait_route(&icp, "ns", "tls").await;
    wait_ready(&icp, "ns", "tls").await;
    let tls_addr = icp.tls_addr.expect("TLS listener");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    for (sni, want, alpn) in [
        ("a.test", &a_der, b"h2".to_vec()),
        ("x.b.test", &b_der, b"http/1.1".to_vec()),
    ] {
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        cfg.alpn_protocols = vec![alpn.clone()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let tcp = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
        let tls = connector
            .connect(name, tcp)
            .await
            .expect("handshake (certificate verified)");
        let (_, conn) = tls.get_ref();
        assert_eq!(
            conn.peer_certificates().unwrap()[0].as_ref(),
            want.as_slice(),
            "{sni}"
        );
        assert_eq!(conn.alpn_protocol(), Some(alpn.as_slice()));

        let req = Request::builder()
            .uri(format!("https://{sni}/secure"))
            .header("host", sni)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = if alpn == b"h2" {
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let mut req = req;
            req.headers_mut().remove("host");
            send.send_request(req).await.unwrap()
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .unwrap();
            tokio::spawn(conn);
            let (mut parts, body) = req.into_parts();
            parts.uri = "/secure".parse().unwrap();
            send.send_request(Request::from_parts(parts, body))
                .await
                .unwrap()
        };
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(j["server"], "tls");
        assert_eq!(j["path"], "/secure");
    }
    icp.stop().await;
}
