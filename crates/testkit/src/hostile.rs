//! Hostile clients for the connection-limit tests of every HTTP port: a
//! slowloris client, a silent one, an open idle HTTP/1.1 connection, and a
//! wait for the server to close a socket.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Generous bound on "the server closes it" (the tests set timeouts of a
/// second or so).
pub const CLOSED_WITHIN: Duration = Duration::from_secs(30);

/// Reads from `s` until the server closes it (end of stream or reset) and
/// returns what it sent before; panics after [`CLOSED_WITHIN`].
pub async fn until_closed(s: &mut TcpStream) -> String {
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

/// A client that sends `head` (a request line and some headers, no blank
/// line) and then one more header byte every 100 ms, never finishing.
#[derive(Debug)]
pub struct Slowloris {
    trickle: JoinHandle<()>,
    read: tokio::net::tcp::OwnedReadHalf,
}

impl Slowloris {
    /// Connects to `addr` and starts trickling.
    pub async fn start(addr: SocketAddr, head: &str) -> Slowloris {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(head.as_bytes()).await.expect("send the head");
        let (read, mut write) = s.into_split();
        let trickle = tokio::spawn(async move {
            for b in b"X-Slow: ".iter().cycle() {
                if write.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Slowloris { trickle, read }
    }

    /// Waits until the server closes the connection; panics after
    /// [`CLOSED_WITHIN`].
    pub async fn closed(mut self) {
        let mut buf = [0u8; 256];
        let read = async {
            while let Ok(n) = self.read.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        };
        tokio::time::timeout(CLOSED_WITHIN, read)
            .await
            .expect("the slowloris client is disconnected");
        self.trickle.abort();
    }
}

/// An HTTP/1.1 connection to `addr`, open and idle.
pub async fn open_http1(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    send
}
