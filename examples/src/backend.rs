//! HTTP backends on loopback that answer with their own address.
//!
//! Each response has status 200, header `x-backend: <ip:port>`, header `x-path: <path as
//! received>` and the address as body. A path `/delay/<ms>` answers after that many
//! milliseconds. The server speaks HTTP/1.1 and HTTP/2 (prior knowledge)
//! on the same port. Stopping a backend closes its listener *and* its open connections, as a
//! crashed process would.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// A running backend. Dropping it (or [`Backend::stop`]) stops it.
#[derive(Debug)]
pub struct Backend {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Backend {
    /// Starts a backend on `127.0.0.1:0`.
    pub async fn start() -> std::io::Result<Backend> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(serve(listener, addr));
        Ok(Backend { addr, task })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and drops every open connection.
    pub async fn stop(self) {
        self.task.abort();
        let _ = (&mut { self }.task).await;
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, addr: SocketAddr) {
    // Connections live in this set: aborting the accept task drops the set and closes them all.
    let mut conns = JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(_) => continue,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let _ = stream.set_nodelay(true);
        conns.spawn(async move {
            let svc = service_fn(move |req| answer(req, addr));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    addr: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    if let Some(ms) = req
        .uri()
        .path()
        .strip_prefix("/delay/")
        .and_then(|ms| ms.parse().ok())
    {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let me = addr.to_string();
    Ok(Response::builder()
        .header("x-backend", &me)
        .header("x-path", path)
        .body(Full::new(Bytes::from(me)))
        .expect("valid response"))
}
