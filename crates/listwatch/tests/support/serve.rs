//! One store served through `ListWatch::handle` over HTTP/1.1 on loopback,
//! for the protocol tests and the loopback benchmark.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use listwatch::{HandlerConfig, ListWatch, Store, Stores};
use tokio::net::TcpListener;

/// Serves `store` on `127.0.0.1:<ephemeral>` until the runtime ends.
pub async fn serve(store: Store, config: HandlerConfig) -> SocketAddr {
    let stores = Arc::new(Stores::new());
    stores.insert(store);
    let lw = ListWatch::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            let (lw, stores) = (lw.clone(), stores.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let (lw, stores) = (lw.clone(), stores.clone());
                    async move { Ok::<_, Infallible>(lw.handle(&stores, &req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}
