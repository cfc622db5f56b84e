//! HTTP/2 and h2c in, h2c to the backend, websockets, TLS with SNI.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use futures::{SinkExt, StreamExt};
use http::{Request, StatusCode, Version};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use testkit::fixtures::Hso;
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn h2c_clients_and_an_h2c_backend() {
    let [plain, grpc] = echoes(["plain", "grpc"]).await;
    let grpc_route = Hso::new("ns", "grpc")
        .host("grpc.test")
        .service_port_name("grpc", "grpc");
    let routes = [
        http_service("plain", plain, true),
        service_yaml("ns", "grpc", "grpc", Some("kubernetes.io/h2c"), grpc, true),
        httpso_yaml("ns", "plain", "plain", &["plain.test"], &[], &[]),
        grpc_route.yaml_document(),
    ]
    .concat();
    let keys = ["ns/plain", "ns/grpc"];
    let (icp, _dir) = serve_files(&[("routes.yaml", &routes)], &[], &keys, &keys).await;

    // An HTTP/2 (prior knowledge) client; the host comes from :authority.
    let req = Request::builder()
        .uri(format!("http://plain.test:{}/h2", icp.proxy_addr.port()))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    // Dial the proxy whatever the URI's host says.
    let resp = h2c(icp.proxy_addr).await.send_request(req).await.unwrap();
    assert_eq!(resp.version(), Version::HTTP_2);
    let j = ok_json(resp).await;
    assert_eq!(j["server"], "plain");
    assert_eq!(j["version"], "HTTP/1.1", "HTTP/1.1 to a plain backend");
    assert_eq!(j["host"], format!("plain.test:{}", icp.proxy_addr.port()));

    // A gRPC-style request over HTTP/1.1 in, h2c out.
    let got = send_grpc_style(icp.proxy_addr).await;
    assert_eq!(got["server"], "grpc");
    assert_eq!(got["version"], "HTTP/2.0");
    assert_eq!(got["headers"]["te"][0], "trailers");
    assert_eq!(got["headers"]["content-type"][0], "application/grpc");
    icp.stop().await;
}

async fn send_grpc_style(proxy: std::net::SocketAddr) -> serde_json::Value {
    let req = Request::builder()
        .method("POST")
        .uri("http://grpc.test/pkg.Service/Method")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(Bytes::from_static(
            b"\0\0\0\0\x02hi",
        )))
        .unwrap();
    ok_json(h2c(proxy).await.send_request(req).await.unwrap()).await
}

/// Sends each of `messages` over `ws` and expects it echoed, checks that the
/// open socket counts as one request in flight, then closes it and waits
/// until it is no longer counted.
async fn echo_while_counted<S>(
    icp: &interceptor::Interceptor,
    mut ws: tokio_tungstenite::WebSocketStream<S>,
    messages: &[Message],
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    for message in messages {
        ws.send(message.clone()).await.unwrap();
        let back = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(&back, message);
    }
    // Open socket: still one request in flight.
    let q = wait_concurrency(icp, "ns/app", 1).await;
    assert_eq!(q["ns/app"]["RequestCount"], 1);
    ws.close(None).await.unwrap();
    drop(ws);
    wait_concurrency(icp, "ns/app", 0).await;
}

#[tokio::test]
async fn websocket_round_trip_is_counted_for_its_lifetime() {
    let (icp, _dir) = serve_app("ws.test", &[]).await;
    let stream = tokio::net::TcpStream::connect(icp.proxy_addr)
        .await
        .unwrap();
    let (ws, resp) = tokio_tungstenite::client_async("ws://ws.test/socket", stream)
        .await
        .expect("websocket handshake through the proxy");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let mut messages: Vec<_> = (0..3)
        .map(|i| Message::text(format!("hello {i}")))
        .collect();
    messages.push(Message::binary(vec![1u8, 2, 3]));
    echo_while_counted(&icp, ws, &messages).await;
    icp.stop().await;
}

#[tokio::test]
async fn websocket_over_http2_extended_connect() {
    let (icp, _dir) = serve_app("ws2.test", &[]).await;
    // h2c with prior knowledge; the proxy announces
    // SETTINGS_ENABLE_CONNECT_PROTOCOL, which the client must have seen.
    let mut send = h2c::<Empty<Bytes>>(icp.proxy_addr).await;
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
    let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    let messages: Vec<_> = (0..3)
        .map(|i| Message::text(format!("over h2 {i}")))
        .collect();
    echo_while_counted(&icp, ws, &messages).await;
    icp.stop().await;
}

#[tokio::test]
async fn tls_picks_the_certificate_by_sni_and_speaks_h2_and_http1() {
    let pki = Pki::new();
    let certs = tempfile::tempdir().unwrap();
    let a_der = pki.write_leaf(&["a.test"], certs.path(), "a.crt", "a.key");
    let b_der = pki.write_leaf(&["*.b.test"], certs.path(), "b.pem", "b-key.pem");

    let dir = tempfile::tempdir().unwrap();
    let backend = echo("tls").await;
    write_app(dir.path(), "tls", &[], backend, true);
    // The default pair does not exist: every name is served from the store.
    let mut flags = tls_flags("/nonexistent/tls.crt", "/nonexistent/tls.key");
    flags.extend(["--tls-cert-store-paths", certs.path().to_str().unwrap()]);
    let icp = start_waiting(dir.path(), &flags, &["ns/tls"], &["ns/tls"]).await;
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
            let mut req = req;
            req.headers_mut().remove("host");
            h2_handshake(tls).await.send_request(req).await.unwrap()
        } else {
            let (mut parts, body) = req.into_parts();
            parts.uri = "/secure".parse().unwrap();
            let req = Request::from_parts(parts, body);
            h1_handshake(tls).await.send_request(req).await.unwrap()
        };
        let j = ok_json(resp).await;
        assert_eq!(j["server"], "tls");
        assert_eq!(j["path"], "/secure");
    }
    icp.stop().await;
}
