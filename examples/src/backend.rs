//! HTTP backends on loopback that answer with their own address.
//!
//! Each response has status 200, header `x-backend: <ip:port>`, header `x-path: <path as
//! received>`, header `x-authority: <authority or Host>`, every request header named `x-…`
//! echoed as `x-echo-…`, and the address as body. A path `/delay/<ms>` answers after that many
//! milliseconds, `/status/<code>` with that status, `/drip/<ms>` sends its body in two halves
//! that many milliseconds apart. A backend started with a [`Mode`] can fail
//! or slow down every request, or a share of them, and can attach an ORCA load report to its
//! answers (in a header, or in the trailers as gRPC servers do). The server speaks HTTP/1.1 and HTTP/2
//! (prior knowledge)
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
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// A running backend. Dropping it (or [`Backend::stop`]) stops it.
#[derive(Debug)]
pub struct Backend {
    addr: SocketAddr,
    task: JoinHandle<()>,
    served: Arc<AtomicU64>,
}

/// How a backend misbehaves.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mode {
    /// Answer this share of requests (percent, spread evenly over the sequence) with
    /// `fail_status`.
    pub fail_percent: u8,
    /// The failing status (503 when 0).
    pub fail_status: u16,
    /// Wait this long before every answer.
    pub delay: Option<Duration>,
    /// Attach this load report to every answer.
    pub report: Option<LoadReport>,
}

/// An ORCA load report a backend attaches to its answers.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadReport {
    /// `cpu_utilization`.
    pub cpu_utilization: f64,
    /// `rps_fractional`.
    pub rps_fractional: f64,
    /// Send it base64-encoded in the trailers (`endpoint-load-metrics-bin`, as gRPC servers
    /// do) instead of as a `TEXT` header.
    pub in_trailers: bool,
    /// One entry of `named_metrics` (what load reports to the control plane carry).
    pub named: Option<(&'static str, f64)>,
}

impl LoadReport {
    /// The `TEXT` header value.
    pub fn text(&self) -> String {
        let mut t = format!(
            "TEXT cpu_utilization={}, rps_fractional={}",
            self.cpu_utilization, self.rps_fractional
        );
        if let Some((k, v)) = self.named {
            t.push_str(&format!(", named_metrics.{k}={v}"));
        }
        t
    }

    /// The `-bin` value: a base64 `xds.data.orca.v3.OrcaLoadReport` with fields 1 and 6.
    pub fn binary(&self) -> String {
        use base64::Engine;
        let mut proto = vec![(1 << 3) | 1];
        proto.extend_from_slice(&self.cpu_utilization.to_le_bytes());
        proto.push((6 << 3) | 1);
        proto.extend_from_slice(&self.rps_fractional.to_le_bytes());
        if let Some((k, v)) = self.named {
            // named_metrics (field 8): a map entry of key (1) and double value (2).
            let mut entry = vec![0x0a, k.len() as u8];
            entry.extend_from_slice(k.as_bytes());
            entry.push(0x11);
            entry.extend_from_slice(&v.to_le_bytes());
            proto.push((8 << 3) | 2);
            proto.push(entry.len() as u8);
            proto.extend(entry);
        }
        base64::engine::general_purpose::STANDARD.encode(proto)
    }
}

impl Mode {
    /// Every request fails with `status`.
    pub fn failing(status: u16) -> Self {
        Self {
            fail_percent: 100,
            fail_status: status,
            ..Self::default()
        }
    }

    /// `percent` of requests fail with 503.
    pub fn flaky(percent: u8) -> Self {
        Self {
            fail_percent: percent,
            fail_status: 503,
            ..Self::default()
        }
    }

    /// Every request waits `delay`.
    pub fn slow(delay: Duration) -> Self {
        Self {
            delay: Some(delay),
            ..Self::default()
        }
    }
}

impl Backend {
    /// Starts a backend on `127.0.0.1:0`.
    pub async fn start() -> std::io::Result<Backend> {
        Self::start_with(Mode::default()).await
    }

    /// Starts a backend that behaves as `mode` says.
    pub async fn start_with(mode: Mode) -> std::io::Result<Backend> {
        Self::start_on("127.0.0.1:0".parse().expect("address"), mode).await
    }

    /// Starts a backend on `addr` (e.g. `127.0.0.2:<port>`, for several addresses one port).
    pub async fn start_on(addr: SocketAddr, mode: Mode) -> std::io::Result<Backend> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let served = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(serve(listener, addr, mode, served.clone()));
        Ok(Backend { addr, task, served })
    }

    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
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

async fn serve(listener: TcpListener, addr: SocketAddr, mode: Mode, served: Arc<AtomicU64>) {
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
        let served = served.clone();
        conns.spawn(async move {
            let svc = service_fn(move |req| answer(req, addr, mode, served.clone()));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// A body sent in two halves, the second after a pause.
#[derive(Debug)]
pub struct Drip {
    first: Option<Bytes>,
    second: Option<Bytes>,
    pause: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for Drip {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        use std::future::Future;
        if let Some(first) = self.first.take() {
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(first))));
        }
        if self.second.is_none() {
            return std::task::Poll::Ready(None);
        }
        std::task::ready!(self.pause.as_mut().poll(cx));
        std::task::Poll::Ready(self.second.take().map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// A body of one data frame followed by trailers.
#[derive(Debug)]
pub struct Trailed {
    data: Option<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl http_body::Body for Trailed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let frame = match self.data.take() {
            Some(d) => Some(http_body::Frame::data(d)),
            None => self.trailers.take().map(http_body::Frame::trailers),
        };
        std::task::Poll::Ready(frame.map(Ok))
    }
}

type AnswerBody = http_body_util::Either<Full<Bytes>, http_body_util::Either<Drip, Trailed>>;

async fn answer(
    req: Request<Incoming>,
    addr: SocketAddr,
    mode: Mode,
    served: Arc<AtomicU64>,
) -> Result<Response<AnswerBody>, Infallible> {
    let n = served.fetch_add(1, Ordering::Relaxed);
    if let Some(d) = mode.delay {
        tokio::time::sleep(d).await;
    }
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
    // An even spread: request n fails when (n × 37) mod 100 falls under the share.
    let failing = mode.fail_percent > 0 && (n * 37) % 100 < u64::from(mode.fail_percent);
    let status = if failing {
        if mode.fail_status == 0 {
            503
        } else {
            mode.fail_status
        }
    } else {
        req.uri()
            .path()
            .strip_prefix("/status/")
            .and_then(|s| s.parse().ok())
            .unwrap_or(200)
    };
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let mut res = Response::builder()
        .status(status)
        .header("x-backend", &me)
        .header("x-path", path)
        .header("x-authority", authority);
    for (name, value) in req.headers() {
        if name.as_str().starts_with("x-") {
            res = res.header(format!("x-echo-{name}"), value);
        }
    }
    let drip = req
        .uri()
        .path()
        .strip_prefix("/drip/")
        .and_then(|ms| ms.parse().ok());
    use http_body_util::Either::{Left, Right};
    let body = match (drip, mode.report) {
        (Some(ms), _) => Right(Left(Drip {
            first: Some(Bytes::from(me.clone())),
            second: Some(Bytes::from_static(b" (second half)")),
            pause: Box::pin(tokio::time::sleep(Duration::from_millis(ms))),
        })),
        (None, Some(r)) if r.in_trailers => {
            let mut trailers = http::HeaderMap::new();
            trailers.insert(
                "endpoint-load-metrics-bin",
                r.binary().parse().expect("base64 is a valid header value"),
            );
            Right(Right(Trailed {
                data: Some(Bytes::from(me)),
                trailers: Some(trailers),
            }))
        }
        (None, Some(r)) => {
            res = res.header("endpoint-load-metrics", r.text());
            Left(Full::new(Bytes::from(me)))
        }
        (None, None) => Left(Full::new(Bytes::from(me))),
    };
    Ok(res.body(body).expect("valid response"))
}
