//! What the tests that run `http-addon` as child processes share.
#![allow(dead_code)] // each test file uses a different part

use std::path::Path;
use std::process::{Child, Command, Stdio};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_http-addon");

/// Kills the child when the test ends, however it ends.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` without stdin or stdout, its stderr written to `log` (or
/// dropped).
pub fn spawn(cmd: &mut Command, log: Option<&Path>) -> Proc {
    let stderr = match log {
        Some(log) => Stdio::from(std::fs::File::create(log).unwrap()),
        None => Stdio::null(),
    };
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    Proc(child.spawn().unwrap())
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Free ports for an interceptor's proxy, admin and metrics servers.
pub struct InterceptorPorts {
    pub proxy: u16,
    pub admin: u16,
    pub metrics: u16,
}

impl InterceptorPorts {
    /// Three ports nothing listens on right now.
    pub fn free() -> Self {
        InterceptorPorts {
            proxy: free_port(),
            admin: free_port(),
            metrics: free_port(),
        }
    }

    /// The flags that bind the three servers on 127.0.0.1.
    pub fn flags(&self) -> Vec<String> {
        let mut flags = vec!["--bind-address".to_string(), "127.0.0.1".to_string()];
        for (flag, port) in [
            ("--proxy-port", self.proxy),
            ("--admin-port", self.admin),
            ("--metrics-port", self.metrics),
        ] {
            flags.extend([flag.to_string(), port.to_string()]);
        }
        flags
    }
}

pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// A plain HTTP/1.1 client.
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// GET `url` with `Host: host`: status and body, or the error as text.
pub async fn get(client: &HttpClient, url: &str, host: &str) -> Result<(u16, Bytes), String> {
    let req = http::Request::builder()
        .uri(url)
        .header("host", host)
        .body(Empty::new())
        .unwrap();
    let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// The value of an unlabelled gauge in a Prometheus text exposition.
pub fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
